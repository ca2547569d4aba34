use super::*;

const DEFAULT: &str = include_str!("../../../../config/policy/default.yaml");

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, Path::new("/etc/tidal/policy.yaml"))
}

#[test]
fn the_shipped_policy_loads_and_an_empty_file_is_the_defaults() {
    let p = parse(DEFAULT).unwrap();
    assert!((Duration::from_millis(100)..=Duration::from_secs(60)).contains(&p.interval.0));
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(parse("").unwrap(), Policy::default());
    assert_eq!(parse("# nothing\n").unwrap(), Policy::default());
}

#[test]
fn durations_are_spelled_with_units() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    for bad in ["", "5", "s", "5 parsecs", "-1s", "1e400s", "99999h"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn errors_name_the_file_the_line_and_the_problem() {
    // YAML the parser refuses: its location.
    let e = parse("interval: 1s\nmode: fast\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.to_string().starts_with("/etc/tidal/policy.yaml:2: "),
        "{e}"
    );
    assert!(e.to_string().contains("fast"), "{e}");

    // An unknown field is refused, not ignored.
    let e = parse("rules:\n  protect:\n    max_agee: 5s\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.problem.contains("max_agee"), "{e}");

    // A bad duration.
    let e = parse("interval: 1\n").unwrap_err();
    assert_eq!(e.line, Some(1), "{e}");
    assert!(e.problem.contains("duration \"1\" has no unit"), "{e}");
    let e = parse("windows:\n  usage: 5 parsecs\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.problem.contains("\"parsecs\" is not ms, s, m or h"),
        "{e}"
    );

    // Ranges checked after parsing point at the rule's field.
    let text = "interval: 1s\nrules:\n  give-back:\n    healthy_for: 10s\n  throttle-offline:\n    enabled: true\n    step: 0.9\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.problem.contains("rules.throttle-offline.step 0.9"), "{e}");

    let e = parse("interval: 50ms\n").unwrap_err();
    assert_eq!((e.line, e.problem.contains("100ms..60s")), (Some(1), true));
    let e = parse("interval: 2m\n").unwrap_err();
    assert_eq!(e.line, Some(1));

    let e = parse("interval: 2s\nwindows:\n  trigger: 1s\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");

    let e = parse("rules:\n  online:\n    quantile: 1.5\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");

    // A range problem whose field was left to its default points at the
    // deepest key that is there.
    let e = parse("max_step: 0.1\nrules:\n  memory-squeeze:\n    enabled: true\n").unwrap_err();
    assert!(e.problem.contains("throttle-offline"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");

    let e = parse("rules:\n  memory-squeeze:\n    pressure: 50\n").unwrap_err();
    assert!(e.problem.contains("max_memory_pressure"), "{e}");
    assert_eq!(e.line, Some(3));
}

#[test]
fn an_unreadable_or_huge_file_is_refused_with_its_name() {
    let e = Policy::load(Path::new("/nonexistent/policy.yaml")).unwrap_err();
    assert_eq!(e.line, None);
    assert!(
        e.to_string().starts_with("/nonexistent/policy.yaml: "),
        "{e}"
    );
    let dir = crate::testfs::FakeDir::new("policy-huge", &[]);
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "#".repeat(MAX_FILE + 1)).unwrap();
    assert!(Policy::load(&path).unwrap_err().problem.contains("bytes"));
}

/// Found by the policy_file fuzz target (10M-run soak): YAML breaks lines
/// at NEL, LS and PS too, so its line numbers ran past the file's lines as
/// an editor shows them. Such a file is refused, naming the line the
/// character is on.
#[test]
fn a_line_break_editors_do_not_show_is_refused_with_its_line() {
    for (c, name) in [
        ('\u{85}', "U+0085"),
        ('\u{2028}', "U+2028"),
        ('\u{2029}', "U+2029"),
    ] {
        let text = format!("interval: 1s\r\nmode: enforce\nmax_step: 0.5{c}rules: x\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.problem.contains(name), "{e}");
    }
    // The crash input itself.
    let input = include_bytes!("../../../../tests/fuzz/corpus/policy_file/nel-line-break");
    let e = parse(&String::from_utf8_lossy(input)).unwrap_err();
    assert!(e.problem.contains("U+0085"), "{e}");
}
