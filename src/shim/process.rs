//! One process of a container (its init or an exec) and its lifecycle state.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use super::reaper::Exit;
use super::stdio::{StdioHandles, StdioPaths};

/// Where a process is in its life. The `-ing` states are claimed before a
/// slow step (a helper, a freeze) and left when it ends, all under the
/// process's lock ([`Process::transition`]), so two requests can never both
/// act on the same state: a Start and a Delete of a created container, a
/// Pause and a Resume. The moves allowed are [`legal`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    /// A Start is under way.
    Starting,
    Running,
    /// A Pause is under way.
    Pausing,
    Paused,
    /// A Resume is under way.
    Resuming,
    /// A Delete is under way (from Created or Stopped); the process may exit
    /// meanwhile, which records its exit but keeps this state.
    Deleting,
    Stopped,
}

impl Status {
    #[cfg(test)]
    pub const ALL: [Status; 8] = [
        Status::Created,
        Status::Starting,
        Status::Running,
        Status::Pausing,
        Status::Paused,
        Status::Resuming,
        Status::Deleting,
        Status::Stopped,
    ];
}

/// Whether a process may move from `from` to `to`: a request claims an
/// `-ing` state, which ends in the state it asked for or, when the step
/// failed, the one it came from; a process that exits is Stopped from any
/// state but Deleting (whose end removes the process) and Stopped itself.
pub fn legal(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (Created, Starting)
            | (Starting, Running)
            | (Starting, Created)
            | (Running, Pausing)
            | (Pausing, Paused)
            | (Pausing, Running)
            | (Paused, Resuming)
            | (Resuming, Running)
            | (Resuming, Paused)
            | (Created, Deleting)
            | (Stopped, Deleting)
            | (Deleting, Created)
            | (Deleting, Stopped)
            | (
                Created | Starting | Running | Pausing | Paused | Resuming,
                Stopped
            )
    )
}

/// Fields that change over the process's life; guarded by `Process::state`.
#[derive(Debug, Clone)]
pub struct State {
    /// Changed only through [`legal`] moves (and an exit).
    pub status: Status,
    /// 0 until the process exists (an exec before Start).
    pub pid: i32,
    /// Set once the exit has been handled.
    pub exit: Option<Exit>,
}

pub struct Process {
    /// The exec id; empty for a container's init.
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The OCI process spec of an exec, as JSON.
    pub spec: Option<String>,
    /// Lock never held across an `.await`.
    state: Mutex<State>,
    /// Stdio kept while the process runs (set at create/start).
    pub handles: Mutex<Option<Arc<StdioHandles>>>,
    /// Becomes `Some` once the exit has been recorded; Wait listens here.
    exited: watch::Sender<Option<Exit>>,
    /// Opens when the exit may be published: after TaskStart (or when the
    /// process is killed or deleted without ever starting), so TaskExit can
    /// never overtake it.
    gate: watch::Sender<bool>,
}

impl Process {
    pub fn new(exec_id: String, stdio: StdioPaths, spec: Option<String>, pid: i32) -> Self {
        Self {
            exec_id,
            stdio,
            spec,
            state: Mutex::new(State {
                status: Status::Created,
                pid,
                exit: None,
            }),
            handles: Mutex::new(None),
            exited: watch::channel(None).0,
            gate: watch::channel(false).0,
        }
    }

    pub fn state(&self) -> State {
        self.state.lock().unwrap().clone()
    }

    pub fn status(&self) -> Status {
        self.state.lock().unwrap().status
    }

    /// Whether the process has exited or is being deleted: nothing more
    /// can be done with it.
    pub fn ended(&self) -> bool {
        matches!(self.status(), Status::Stopped | Status::Deleting)
    }

    /// Gives up a claimed state after its step failed: back to `back`, or
    /// Stopped if the process exited meanwhile.
    pub fn abandon(&self, claimed: Status, back: Status) {
        let mut s = self.state.lock().unwrap();
        if s.status == claimed {
            s.status = if s.exit.is_some() {
                Status::Stopped
            } else {
                back
            };
        }
    }

    pub fn pid(&self) -> i32 {
        self.state.lock().unwrap().pid
    }

    /// Moves to `to` if the process is in one of `from` and the move is
    /// [`legal`], atomically: returns the state it left, or the state it is
    /// in (and stays in) when it is not one of `from`.
    pub fn transition_from(&self, from: &[Status], to: Status) -> Result<Status, Status> {
        let mut s = self.state.lock().unwrap();
        let now = s.status;
        if !from.contains(&now) || !legal(now, to) {
            return Err(now);
        }
        s.status = to;
        Ok(now)
    }

    /// Moves from `from` to `to` if the process is in `from` (see
    /// [`Process::transition_from`]); else returns the state it is in.
    pub fn transition(&self, from: Status, to: Status) -> Result<(), Status> {
        self.transition_from(&[from], to).map(drop)
    }

    /// Ends an exec's Start: it runs as `pid` (unless it exited meanwhile).
    pub fn set_running(&self, pid: i32) {
        let mut s = self.state.lock().unwrap();
        s.pid = pid;
        if s.status == Status::Starting {
            s.status = Status::Running;
        }
    }

    pub fn set_exited(&self, exit: Exit) {
        {
            let mut s = self.state.lock().unwrap();
            if s.status != Status::Deleting {
                s.status = Status::Stopped;
            }
            s.exit = Some(exit);
        }
        self.exited.send_replace(Some(exit));
    }

    pub fn stdio_handles(&self) -> Option<Arc<StdioHandles>> {
        self.handles.lock().unwrap().clone()
    }

    /// Waits for the exit; returns at once if it already happened.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable in practice.
                return Exit {
                    pid: 0,
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub async fn gate_opened(&self) {
        let mut rx = self.gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use Status::*;

    fn process_in(status: Status) -> Process {
        let p = Process::new(String::new(), StdioPaths::default(), None, 1);
        p.state.lock().unwrap().status = status;
        p
    }

    /// The whole table, written out: every other move is refused.
    #[test]
    fn only_the_listed_moves_are_legal() {
        let allowed = [
            (Created, Starting),
            (Starting, Running),
            (Starting, Created),
            (Running, Pausing),
            (Pausing, Paused),
            (Pausing, Running),
            (Paused, Resuming),
            (Resuming, Running),
            (Resuming, Paused),
            (Created, Deleting),
            (Stopped, Deleting),
            (Deleting, Created),
            (Deleting, Stopped),
            (Created, Stopped),
            (Starting, Stopped),
            (Running, Stopped),
            (Pausing, Stopped),
            (Paused, Stopped),
            (Resuming, Stopped),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(legal(from, to), want, "{from:?} -> {to:?}");
                // A process in `from` moves exactly when the move is legal...
                let p = process_in(from);
                assert_eq!(p.transition(from, to).is_ok(), want, "{from:?} -> {to:?}");
                assert_eq!(p.status(), if want { to } else { from });
                // ...and never from a state it is not in.
                for other in Status::ALL.into_iter().filter(|s| *s != from) {
                    let p = process_in(other);
                    assert_eq!(p.transition(from, to), Err(other));
                    assert_eq!(p.status(), other);
                }
            }
        }
    }

    #[test]
    fn an_exit_stops_a_claimed_step_and_a_delete_keeps_its_claim() {
        let exit = Exit {
            pid: 1,
            status: 137,
            at: SystemTime::now(),
        };
        let p = process_in(Created);
        p.transition(Created, Starting).unwrap();
        p.set_exited(exit);
        // The Start that finishes late neither revives it nor rolls it back.
        assert_eq!(p.transition(Starting, Running), Err(Stopped));
        p.abandon(Starting, Created);
        assert_eq!(p.status(), Stopped);

        let p = process_in(Created);
        p.transition_from(&[Created, Stopped], Deleting).unwrap();
        p.set_exited(exit);
        assert_eq!(p.status(), Deleting, "a second Delete cannot claim it");
        assert_eq!(
            p.transition_from(&[Created, Stopped], Deleting),
            Err(Deleting)
        );
        p.abandon(Deleting, Created);
        assert_eq!(p.status(), Stopped, "a failed delete of an exited process");
    }

    /// Start, Delete, Pause and Resume of one process raced from many
    /// threads: exactly one claim wins each round, and while one step is
    /// under way no other can be.
    #[test]
    fn racing_requests_never_interleave() {
        const THREADS: usize = 8;
        let claims: [(&[Status], Status, Status); 4] = [
            (&[Created], Starting, Running),
            (&[Created, Stopped], Deleting, Created),
            (&[Running], Pausing, Paused),
            (&[Paused], Resuming, Running),
        ];
        for start in [Created, Running, Paused, Stopped] {
            for _ in 0..200 {
                let p = Arc::new(process_in(start));
                let barrier = Arc::new(Barrier::new(THREADS));
                let winners: Vec<Option<usize>> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..THREADS)
                        .map(|i| {
                            let (p, barrier) = (p.clone(), barrier.clone());
                            let (from, to, _) = claims[i % claims.len()];
                            s.spawn(move || {
                                barrier.wait();
                                p.transition_from(from, to).ok().map(|_| i % claims.len())
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let won: Vec<usize> = winners.into_iter().flatten().collect();
                assert_eq!(won.len(), 1, "from {start:?}: {won:?}");
                let (_, claimed, _) = claims[won[0]];
                assert_eq!(p.status(), claimed);
            }
        }

        // Many rounds of claim, work, finish from every thread at once: a
        // step that claimed its state is the only one in flight.
        let p = Arc::new(process_in(Created));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for i in 0..THREADS {
                let (p, in_flight, done) = (p.clone(), in_flight.clone(), done.clone());
                s.spawn(move || {
                    for n in 0..2000 {
                        let (from, claim, to) = claims[(i + n) % claims.len()];
                        let Ok(was) = p.transition_from(from, claim) else {
                            continue;
                        };
                        assert_eq!(in_flight.fetch_add(1, Ordering::SeqCst), 0);
                        std::thread::yield_now();
                        assert_eq!(p.status(), claim, "nobody moved it meanwhile");
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if claim == Deleting || n % 3 == 0 {
                            p.abandon(claim, was); // the step failed
                        } else {
                            p.transition(claim, to).unwrap();
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        // How many steps went through depends on the scheduler (a loaded
        // machine runs the threads nearly one after another); that any did
        // is what makes the in-flight checks above count.
        assert!(
            done.load(Ordering::Relaxed) > 0,
            "no step ever went through"
        );
    }
}
