//! Cron schedules of the `cron-vertical-scaler` trait, and when they fire.
//!
//! A schedule has five fields (minute hour day-of-month month day-of-week)
//! or six, seconds first, as Alibaba's CronHPA takes them; or a descriptor
//! (`@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`,
//! `@yearly`/`@annually`). A field is `*` (`?` too, for the two day fields),
//! or a list of numbers, ranges and names (`JAN`-`DEC`, `SUN`-`SAT`), each
//! optionally with a `/step`; day-of-week 7 is Sunday as 0 is. When both
//! day fields are restricted, a day matches either, as in Vixie cron.
//!
//! A schedule is read in a time zone (`Zone`): the node's, or a named one
//! from the system's zoneinfo. Across a daylight-saving change a job fires
//! once: a time the clock skips fires at the change, a time the clock
//! passes twice fires the first time only. `next_after` and
//! `last_at_or_before` answer in Unix seconds; the scheduler needs no clock
//! of its own, so tests drive it with any.

use crate::ids::shorten;

/// A parsed schedule: the values each field allows, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Days of the month, bits 1-31.
    days: u32,
    /// Months, bits 1-12.
    months: u16,
    /// Days of the week, bits 0-6 (Sunday 0).
    weekdays: u8,
    /// Whether each day field was `*` or `?` (unrestricted).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A field: its name in messages, bounds, names for values from `lo`, and
/// whether `?` may stand for `*`.
struct Field {
    what: &'static str,
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
    question: bool,
}

const SECOND: Field = Field {
    what: "second",
    lo: 0,
    hi: 59,
    names: &[],
    question: false,
};
const MINUTE: Field = Field {
    what: "minute",
    lo: 0,
    hi: 59,
    names: &[],
    question: false,
};
const HOUR: Field = Field {
    what: "hour",
    lo: 0,
    hi: 23,
    names: &[],
    question: false,
};
const DAY: Field = Field {
    what: "day of month",
    lo: 1,
    hi: 31,
    names: &[],
    question: true,
};
const MONTH: Field = Field {
    what: "month",
    lo: 1,
    hi: 12,
    names: &MONTHS,
    question: false,
};
const WEEKDAY: Field = Field {
    what: "day of week",
    lo: 0,
    hi: 7,
    names: &WEEKDAYS,
    question: true,
};

impl Field {
    fn value(&self, t: &str) -> Result<u32, String> {
        let upper = t.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.lo + i as u32);
        }
        let n: u32 = t.parse().map_err(|_| {
            let names = if self.names.is_empty() {
                String::new()
            } else {
                format!(
                    " or a name ({}-{})",
                    self.names[0],
                    self.names[self.names.len() - 1]
                )
            };
            format!(
                "cron {} field {:?} is not a number{names}",
                self.what,
                shorten(t)
            )
        })?;
        if n < self.lo || n > self.hi {
            return Err(format!(
                "cron {} {n} is outside {}-{}",
                self.what, self.lo, self.hi
            ));
        }
        Ok(n)
    }

    /// The values `text` allows, as a bit set, and whether it is `*`/`?`.
    fn parse(&self, text: &str) -> Result<(u64, bool), String> {
        if text == "*" || (self.question && text == "?") {
            return Ok((self.range(self.lo, self.hi, 1), true));
        }
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let n: u32 = s.parse().map_err(|_| {
                        format!("cron {} step {:?} is not a number", self.what, shorten(s))
                    })?;
                    if n == 0 {
                        return Err(format!("cron {} step must not be 0", self.what));
                    }
                    (r, Some(n))
                }
                None => (part, None),
            };
            let (a, b) = if range == "*" || (self.question && range == "?") {
                (self.lo, self.hi)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("cron {} range {a}-{b} runs backwards", self.what));
                }
                (a, b)
            } else {
                // `a/step` runs from a to the field's end.
                let a = self.value(range)?;
                (a, if step.is_some() { self.hi } else { a })
            };
            bits |= self.range(a, b, step.unwrap_or(1));
        }
        Ok((bits, false))
    }

    fn range(&self, a: u32, b: u32, step: u32) -> u64 {
        (a..=b).step_by(step as usize).fold(0, |m, v| m | 1 << v)
    }
}

impl Schedule {
    /// Parses `text`; the error names the field and what is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "{:?} is not a cron descriptor (@yearly, @monthly, @weekly, @daily, @hourly)",
                    shorten(t)
                ))
            }
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "{:?} is not a cron schedule: it needs 5 fields (minute hour day-of-month month day-of-week) or 6 (second first), it has {n}",
                    shorten(text)
                ))
            }
        };
        let (seconds, _) = SECOND.parse(second)?;
        let (minutes, _) = MINUTE.parse(rest[0])?;
        let (hours, _) = HOUR.parse(rest[1])?;
        let (days, any_day) = DAY.parse(rest[2])?;
        let (months, _) = MONTH.parse(rest[3])?;
        let (weekdays, any_weekday) = WEEKDAY.parse(rest[4])?;
        // 7 is Sunday too.
        let weekdays = (weekdays | weekdays >> 7) & 0x7f;
        Ok(Schedule {
            seconds,
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            any_day,
            any_weekday,
        })
    }

    fn day_matches(&self, c: &Civil) -> bool {
        let dom = self.days & 1 << c.day != 0;
        let dow = self.weekdays & 1 << c.weekday() != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first civil time after `c` the schedule names (within 8 years).
    fn next_civil(&self, c: Civil) -> Option<Civil> {
        let mut t = c.plus_seconds(1);
        let end = c.year + 8;
        while t.year <= end {
            if self.months & 1 << t.month == 0 {
                t = Civil::ymd(t.year, t.month, 1).plus_months(1);
            } else if !self.day_matches(&t) {
                t = Civil::ymd(t.year, t.month, t.day).plus_days(1);
            } else if self.hours & 1 << t.hour == 0 {
                t = t.start_of_hour().plus_seconds(3600);
            } else if self.minutes & 1 << t.minute == 0 {
                t = t.start_of_minute().plus_seconds(60);
            } else if self.seconds & 1 << t.second == 0 {
                t = t.plus_seconds(1);
            } else {
                return Some(t);
            }
        }
        None
    }

    /// The last civil time at or before `c` the schedule names (within 8
    /// years).
    fn prev_civil(&self, c: Civil) -> Option<Civil> {
        let mut t = c;
        let end = c.year - 8;
        while t.year >= end {
            if self.months & 1 << t.month == 0 {
                t = Civil::ymd(t.year, t.month, 1).plus_seconds(-1);
            } else if !self.day_matches(&t) {
                t = Civil::ymd(t.year, t.month, t.day).plus_seconds(-1);
            } else if self.hours & 1 << t.hour == 0 {
                t = t.start_of_hour().plus_seconds(-1);
            } else if self.minutes & 1 << t.minute == 0 {
                t = t.start_of_minute().plus_seconds(-1);
            } else if self.seconds & 1 << t.second == 0 {
                t = t.plus_seconds(-1);
            } else {
                return Some(t);
            }
        }
        None
    }

    /// When the schedule next fires strictly after Unix time `t` in `zone`.
    pub fn next_after(&self, zone: &Zone, t: i64) -> Option<i64> {
        let mut cursor = Civil::from_unix(t + zone.offset_at(t) as i64);
        for _ in 0..10_000 {
            let c = self.next_civil(cursor)?;
            let at = zone.first_instant(c.to_unix());
            if at > t {
                return Some(at);
            }
            cursor = c;
        }
        None
    }

    /// When the schedule last fired at or before Unix time `t` in `zone`.
    pub fn last_at_or_before(&self, zone: &Zone, t: i64) -> Option<i64> {
        let mut cursor = Civil::from_unix(t + zone.offset_at(t) as i64);
        for _ in 0..10_000 {
            let c = self.prev_civil(cursor)?;
            let at = zone.first_instant(c.to_unix());
            if at <= t {
                return Some(at);
            }
            cursor = c.plus_seconds(-1);
        }
        None
    }
}

/// One job of a `cron-vertical-scaler` trait, as its controller needs it.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    /// The schedule as the trait writes it.
    pub schedule_text: String,
    /// The zone its schedule is read in...
    pub zone: Zone,
    /// ...as the trait names it (empty: the node's).
    pub time_zone: String,
    /// The CPU limit it sets, in millicores.
    pub cpu_millis: Option<u64>,
    /// The memory limit it sets, in bytes.
    pub memory_bytes: Option<u64>,
    /// How long its limits last, in seconds, before the declared ones
    /// return; None: until another job sets the same resource.
    pub lasts: Option<i64>,
}

impl Job {
    /// Whether it sets `r`.
    pub fn sets(&self, r: Resource) -> bool {
        match r {
            Resource::Cpu => self.cpu_millis.is_some(),
            Resource::Memory => self.memory_bytes.is_some(),
        }
    }

    /// Its latest firing at or before `now`.
    pub fn last_firing(&self, now: i64) -> Option<i64> {
        self.schedule.last_at_or_before(&self.zone, now)
    }

    /// Its first firing after `now`.
    pub fn next_firing(&self, now: i64) -> Option<i64> {
        self.schedule.next_after(&self.zone, now)
    }
}

/// A resource a job sets; each is scheduled on its own, so a CPU job and a
/// memory job do not end each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    pub const ALL: [Resource; 2] = [Resource::Cpu, Resource::Memory];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
}

/// What a container's jobs want for one resource at some time.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// No job setting it has fired: the declared limit stands.
    Declared,
    /// `job`'s value, since its firing at `at`.
    Set { job: &'a Job, at: i64 },
    /// The declared limit again, since `job`'s firing ran out at `at`.
    Back { job: &'a Job, at: i64 },
}

/// The same when the same job (by name) wants it since the same time.
impl PartialEq for Wanted<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Wanted::Declared, Wanted::Declared) => true,
            (Wanted::Set { job: a, at: x }, Wanted::Set { job: b, at: y })
            | (Wanted::Back { job: a, at: x }, Wanted::Back { job: b, at: y }) => {
                a.name == b.name && x == y
            }
            _ => false,
        }
    }
}

impl Wanted<'_> {
    /// When it began (None for `Declared`).
    pub fn since(&self) -> Option<i64> {
        match self {
            Wanted::Declared => None,
            Wanted::Set { at, .. } | Wanted::Back { at, .. } => Some(*at),
        }
    }
}

/// What `jobs` want for resource `r` at Unix time `now`: the value of the
/// job setting `r` whose firing is the latest at or before `now` (a later
/// job in the list wins a tie), or the declared limit once that firing has
/// run out (an earlier job's effect ended when a later one fired). This is
/// worked out from the schedules alone, so a controller that restarts
/// knows it without remembering anything.
pub fn wanted(jobs: &[Job], r: Resource, now: i64) -> Wanted<'_> {
    let latest = jobs
        .iter()
        .filter(|j| j.sets(r))
        .filter_map(|j| Some((j, j.last_firing(now)?)))
        .fold(None, |best: Option<(&Job, i64)>, (j, at)| match best {
            Some((_, b)) if b > at => best,
            _ => Some((j, at)),
        });
    match latest {
        None => Wanted::Declared,
        Some((job, at)) => match job.lasts {
            Some(lasts) if at + lasts <= now => Wanted::Back {
                job,
                at: at + lasts,
            },
            _ => Wanted::Set { job, at },
        },
    }
}

/// When what `wanted` answers can next change after `now`, for any
/// resource: a job's next firing, or the end of a firing in effect.
pub fn next_change(jobs: &[Job], now: i64) -> Option<i64> {
    let ends = Resource::ALL
        .into_iter()
        .filter_map(|r| match wanted(jobs, r, now) {
            Wanted::Set { job, at } => Some(at + job.lasts?),
            _ => None,
        });
    jobs.iter()
        .filter_map(|j| j.next_firing(now))
        .chain(ends)
        .min()
}

/// The time zone a schedule is read in.
#[derive(Debug, Clone)]
pub enum Zone {
    /// A fixed offset from UTC, in seconds (UTC itself is 0).
    Fixed(i32),
    /// A zone of the system's zoneinfo, with its daylight-saving rules.
    Tz(Box<tz::TimeZone>),
}

impl Zone {
    /// The zone named `name` (`UTC`, `Europe/Berlin`) from the system's
    /// zoneinfo; the node's own zone for `None` or an empty name.
    pub fn named(name: Option<&str>) -> Result<Zone, String> {
        match name.filter(|n| !n.is_empty()) {
            None => tz::TimeZone::local()
                .map(|z| Zone::Tz(Box::new(z)))
                .or(Ok(Zone::Fixed(0))),
            Some("UTC" | "Etc/UTC") => Ok(Zone::Fixed(0)),
            Some(n) => {
                let valid = n.split('/').all(|p| {
                    !p.is_empty()
                        && p != ".."
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
                });
                if !valid {
                    return Err(format!("time zone {:?} is not a zone name", shorten(n)));
                }
                let path = format!("/usr/share/zoneinfo/{n}");
                let data =
                    std::fs::read(&path).map_err(|e| format!("time zone {n:?}: {path}: {e}"))?;
                tz::TimeZone::from_tz_data(&data)
                    .map(|z| Zone::Tz(Box::new(z)))
                    .map_err(|e| format!("time zone {n:?}: {path}: {e}"))
            }
        }
    }

    /// The zone's offset from UTC at Unix time `t`, in seconds.
    pub fn offset_at(&self, t: i64) -> i32 {
        match self {
            Zone::Fixed(o) => *o,
            Zone::Tz(z) => z
                .find_local_time_type(t)
                .map(|l| l.ut_offset())
                .unwrap_or(0),
        }
    }

    /// The first Unix time whose local time is `local` (civil seconds since
    /// 1970-01-01 00:00:00 as on a wall clock); for a time the clock skips,
    /// the instant of the skip.
    fn first_instant(&self, local: i64) -> i64 {
        // Transitions are rare: the offsets a day either side cover them.
        let mut candidates: Vec<i64> = [-86_400, 0, 86_400]
            .iter()
            .map(|d| local - self.offset_at(local + d) as i64)
            .filter(|&u| u + self.offset_at(u) as i64 == local)
            .collect();
        candidates.sort_unstable();
        if let Some(&u) = candidates.first() {
            return u;
        }
        // Skipped: the first instant whose local time is past `local`.
        let (mut lo, mut hi) = (local - 86_400, local + 86_400);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if mid + self.offset_at(mid) as i64 > local {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}

/// A wall-clock time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Days from 1970-01-01 to year-month-day (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of day `z` after 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Civil {
    pub fn ymd(year: i64, month: u32, day: u32) -> Civil {
        Civil {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
        }
    }

    pub fn from_unix(t: i64) -> Civil {
        let (year, month, day) = civil_from_days(t.div_euclid(86_400));
        let s = t.rem_euclid(86_400) as u32;
        Civil {
            year,
            month,
            day,
            hour: s / 3600,
            minute: s / 60 % 60,
            second: s % 60,
        }
    }

    /// Seconds since 1970-01-01 00:00:00 of the same calendar.
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }

    /// Sunday 0 to Saturday 6.
    fn weekday(&self) -> u32 {
        // 1970-01-01 was a Thursday.
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) as u32
    }

    fn plus_seconds(&self, s: i64) -> Civil {
        Civil::from_unix(self.to_unix() + s)
    }

    fn plus_days(&self, d: i64) -> Civil {
        self.plus_seconds(d * 86_400)
    }

    fn plus_months(&self, n: u32) -> Civil {
        let m = self.month - 1 + n;
        Civil::ymd(self.year + i64::from(m / 12), m % 12 + 1, self.day)
    }

    fn start_of_hour(&self) -> Civil {
        Civil {
            minute: 0,
            second: 0,
            ..*self
        }
    }

    fn start_of_minute(&self) -> Civil {
        Civil { second: 0, ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Civil {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
        }
        .to_unix()
    }

    fn next(s: &str, zone: &Zone, t: i64) -> Civil {
        let u = Schedule::parse(s).unwrap().next_after(zone, t).unwrap();
        Civil::from_unix(u + zone.offset_at(u) as i64)
    }

    fn civil(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Civil {
        Civil::from_unix(at(y, mo, d, h, mi, s))
    }

    #[test]
    fn calendar_round_trips() {
        for t in [0, 951_782_400, 4_107_542_399, -86_400 * 365] {
            assert_eq!(Civil::from_unix(t).to_unix(), t);
        }
        assert_eq!(Civil::from_unix(951_782_400), civil(2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(2026, 12, 6, 0, 0, 0).weekday(), 0, "a Sunday");
    }

    #[test]
    fn fields_parse_and_bad_ones_say_why() {
        for ok in [
            "0 8 * * 1-5",
            "*/15 * * * *",
            "0,30 0-6/2 1 1,6 0",
            "*/5 * * * * *",
            "0 30 9 ? * MON-FRI",
            "0 0 12 1 jan,jul *",
            "@daily",
            "5/10 * * * *",
        ] {
            Schedule::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            (
                "0 8 * *",
                "5 fields (minute hour day-of-month month day-of-week) or 6",
            ),
            ("61 * * * *", "cron minute 61 is outside 0-59"),
            ("* * * * 5-1", "runs backwards"),
            ("*/0 * * * *", "step must not be 0"),
            ("a * * * *", "cron minute field \"a\" is not a number"),
            ("* * * FOO *", "or a name (JAN-DEC)"),
            ("0 0 25 * * *", "cron hour 25 is outside 0-23"),
            ("@sometimes", "not a cron descriptor"),
            ("? * * * *", "cron minute field \"?\" is not a number"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn six_fields_fire_to_the_second() {
        let utc = Zone::Fixed(0);
        let t = at(2026, 12, 6, 10, 0, 7);
        assert_eq!(
            next("*/5 * * * * *", &utc, t),
            civil(2026, 12, 6, 10, 0, 10)
        );
        assert_eq!(next("30 * * * * *", &utc, t), civil(2026, 12, 6, 10, 0, 30));
        // `a/step` runs to the field's end, a step of 1 too.
        assert_eq!(
            next("50/1 * * * * *", &utc, t),
            civil(2026, 12, 6, 10, 0, 50)
        );
        let late = at(2026, 12, 6, 10, 0, 55);
        assert_eq!(
            next("50/1 * * * * *", &utc, late),
            civil(2026, 12, 6, 10, 0, 56)
        );
        // Five fields fire at second 0.
        assert_eq!(next("* * * * *", &utc, t), civil(2026, 12, 6, 10, 1, 0));
        // Strictly after: a time that matches is not its own next.
        let on = at(2026, 12, 6, 10, 0, 10);
        assert_eq!(
            next("*/5 * * * * *", &utc, on),
            civil(2026, 12, 6, 10, 0, 15)
        );
    }

    #[test]
    fn days_months_and_weekdays() {
        let utc = Zone::Fixed(0);
        let sun = at(2026, 12, 6, 12, 0, 0);
        // Weekdays 8:00: Monday.
        assert_eq!(next("0 8 * * 1-5", &utc, sun), civil(2026, 12, 7, 8, 0, 0));
        // 7 is Sunday.
        assert_eq!(next("0 8 * * 7", &utc, sun), civil(2026, 12, 13, 8, 0, 0));
        // Both day fields restricted: either matches (the 10th, or a Monday).
        assert_eq!(next("0 0 10 * 1", &utc, sun), civil(2026, 12, 7, 0, 0, 0));
        // February 29th: the next leap year.
        assert_eq!(next("0 0 29 2 *", &utc, sun), civil(2028, 2, 29, 0, 0, 0));
        // The 31st skips months without one.
        let feb = at(2027, 1, 31, 12, 0, 0);
        assert_eq!(next("0 0 31 * *", &utc, feb), civil(2027, 3, 31, 0, 0, 0));
        assert_eq!(next("@monthly", &utc, sun), civil(2027, 1, 1, 0, 0, 0));
        // A day that never comes: no firing, not a loop.
        let never = Schedule::parse("0 0 31 2 *").unwrap();
        assert_eq!(never.next_after(&utc, sun), None);
        assert_eq!(never.last_at_or_before(&utc, sun), None);
    }

    #[test]
    fn the_last_firing_is_found_for_a_restart() {
        let utc = Zone::Fixed(0);
        let s = Schedule::parse("0 8 * * 1-5").unwrap();
        let sun = at(2026, 12, 6, 12, 0, 0);
        assert_eq!(
            s.last_at_or_before(&utc, sun),
            Some(at(2026, 12, 4, 8, 0, 0))
        );
        let exactly = at(2026, 12, 4, 8, 0, 0);
        assert_eq!(s.last_at_or_before(&utc, exactly), Some(exactly));
        let s = Schedule::parse("*/20 * * * * *").unwrap();
        assert_eq!(
            s.last_at_or_before(&utc, at(2026, 1, 1, 0, 0, 59)),
            Some(at(2026, 1, 1, 0, 0, 40))
        );
    }

    #[test]
    fn time_zones_and_daylight_saving_changes() {
        // hack/setup installs tzdata.
        let ny = Zone::named(Some("America/New_York")).expect("zoneinfo (Debian's tzdata)");
        // 9:00 in New York is 14:00 UTC in winter, 13:00 in summer.
        let s = Schedule::parse("0 9 * * *").unwrap();
        assert_eq!(
            s.next_after(&ny, at(2026, 12, 6, 0, 0, 0)),
            Some(at(2026, 12, 6, 14, 0, 0))
        );
        assert_eq!(
            s.next_after(&ny, at(2026, 7, 6, 0, 0, 0)),
            Some(at(2026, 7, 6, 13, 0, 0))
        );
        // 2026-03-08: 2:00 EST becomes 3:00 EDT (7:00 UTC). A 2:30 job
        // fires once, at the change; the next day at 2:30 EDT.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let before = at(2026, 3, 8, 0, 0, 0);
        let first = s.next_after(&ny, before).unwrap();
        assert_eq!(first, at(2026, 3, 8, 7, 0, 0));
        assert_eq!(s.next_after(&ny, first), Some(at(2026, 3, 9, 6, 30, 0)));
        // 2026-11-01: 2:00 EDT becomes 1:00 EST (6:00 UTC), 1:30 happens
        // twice. The job fires at the first (5:30 UTC) only.
        let s = Schedule::parse("30 1 * * *").unwrap();
        let first = s.next_after(&ny, at(2026, 11, 1, 0, 0, 0)).unwrap();
        assert_eq!(first, at(2026, 11, 1, 5, 30, 0));
        assert_eq!(s.next_after(&ny, first), Some(at(2026, 11, 2, 6, 30, 0)));
        // Inside the repeated hour, the last firing is the first 1:30.
        assert_eq!(
            s.last_at_or_before(&ny, at(2026, 11, 1, 6, 45, 0)),
            Some(first)
        );
        // Every 15 minutes: 1:45 EDT, then not the repeated 1:00-1:45 EST
        // (those times of day fired as EDT), so 2:00 EST next.
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let t = s.next_after(&ny, at(2026, 11, 1, 5, 40, 0)).unwrap();
        assert_eq!(t, at(2026, 11, 1, 5, 45, 0));
        assert_eq!(s.next_after(&ny, t), Some(at(2026, 11, 1, 7, 0, 0)));
    }

    fn job(name: &str, schedule: &str, lasts: Option<i64>) -> Job {
        Job {
            name: name.into(),
            schedule: Schedule::parse(schedule).unwrap(),
            schedule_text: schedule.into(),
            zone: Zone::Fixed(0),
            time_zone: "UTC".into(),
            cpu_millis: Some(1000),
            memory_bytes: None,
            lasts,
        }
    }

    fn set(w: Wanted<'_>) -> Option<(&str, i64)> {
        match w {
            Wanted::Set { job, at } => Some((job.name.as_str(), at)),
            _ => None,
        }
    }

    #[test]
    fn what_jobs_want_comes_from_the_schedules_alone() {
        let jobs = [
            job("morning", "0 8 * * 1-5", None),
            job("evening", "0 20 * * 1-5", None),
        ];
        let name = |t| set(wanted(&jobs, Resource::Cpu, t));
        // Sunday noon: Friday evening's job still holds.
        let sun = at(2026, 12, 6, 12, 0, 0);
        assert_eq!(name(sun), Some(("evening", at(2026, 12, 4, 20, 0, 0))));
        // Monday 8:00 exactly: the morning job.
        let mon = at(2026, 12, 7, 8, 0, 0);
        assert_eq!(name(mon), Some(("morning", mon)));
        assert_eq!(next_change(&jobs, sun), Some(mon));
        // Neither sets memory: the declared limit stands.
        assert_eq!(wanted(&jobs, Resource::Memory, sun), Wanted::Declared);
        // A tie goes to the later job in the list.
        let tie = [job("a", "0 8 * * *", None), job("b", "0 8 * * 1", None)];
        assert_eq!(set(wanted(&tie, Resource::Cpu, mon)).unwrap().0, "b");
        // Nothing fired yet within the schedules' reach: nothing to set.
        let never = [job("leap", "0 0 30 2 *", None)];
        assert_eq!(wanted(&never, Resource::Cpu, sun), Wanted::Declared);
        assert_eq!(next_change(&never, sun), None);
    }

    #[test]
    fn each_resource_follows_the_jobs_that_set_it() {
        let memory = Job {
            cpu_millis: None,
            memory_bytes: Some(1 << 30),
            ..job("memory-at-nine", "0 9 * * *", None)
        };
        let jobs = [job("cpu-at-eight", "0 8 * * *", None), memory];
        let ten = at(2026, 12, 7, 10, 0, 0);
        // The memory job at 9 does not end the CPU job of 8.
        assert_eq!(
            set(wanted(&jobs, Resource::Cpu, ten)),
            Some(("cpu-at-eight", at(2026, 12, 7, 8, 0, 0)))
        );
        assert_eq!(
            set(wanted(&jobs, Resource::Memory, ten)),
            Some(("memory-at-nine", at(2026, 12, 7, 9, 0, 0)))
        );
    }

    #[test]
    fn a_job_that_lasts_gives_the_declared_limits_back() {
        let jobs = [job("burst", "0 * * * *", Some(600))];
        let hour = at(2026, 12, 6, 9, 0, 0);
        let cpu = |t| wanted(&jobs, Resource::Cpu, t);
        assert_eq!(set(cpu(hour + 300)), Some(("burst", hour)));
        assert_eq!(next_change(&jobs, hour + 300), Some(hour + 600));
        assert!(
            matches!(cpu(hour + 600), Wanted::Back { at, .. } if at == hour + 600),
            "ran out"
        );
        assert_eq!(cpu(hour + 600).since(), Some(hour + 600));
        assert_eq!(next_change(&jobs, hour + 600), Some(hour + 3600));
        // A firing missed while tidald was down, still current, is what a
        // restarted controller finds wanted (and applies once); one that
        // has run out is not.
        assert_eq!(set(cpu(hour + 120)), Some(("burst", hour)));
        assert!(matches!(cpu(hour + 3000), Wanted::Back { .. }));
    }

    #[test]
    fn second_level_jobs_fire_on_their_second() {
        let jobs = [
            job("up", "*/10 * * * * *", None),
            job("down", "5/10 * * * * *", None),
        ];
        let t = at(2026, 12, 6, 9, 0, 0);
        assert_eq!(set(wanted(&jobs, Resource::Cpu, t + 4)), Some(("up", t)));
        assert_eq!(
            set(wanted(&jobs, Resource::Cpu, t + 5)),
            Some(("down", t + 5))
        );
        assert_eq!(next_change(&jobs, t + 5), Some(t + 10));
    }

    #[test]
    fn zone_names_are_checked() {
        assert!(matches!(Zone::named(Some("UTC")), Ok(Zone::Fixed(0))));
        assert!(Zone::named(None).is_ok());
        for bad in ["../../etc/passwd", "Europe/", "Mars/Olympus_Mons", "a b"] {
            let e = Zone::named(Some(bad)).unwrap_err();
            assert!(e.contains("time zone"), "{bad}: {e}");
        }
    }
}
