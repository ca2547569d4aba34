//! Task events to containerd, in the order they happen.
//!
//! Events wait in one queue and go out one at a time over one ttrpc
//! connection to containerd's event service, so containerd sees TaskCreate,
//! TaskStart, TaskExit and TaskDelete in the order the shim made them; an
//! event whose send fails for a broken connection is sent again over a new
//! one before any later event.
//!
//! Each event travels as a protobuf `Any` whose type URL is the event's
//! protobuf name. tidal names them itself ([`Named`]) rather than asking
//! protobuf's reflection (as the shim crate's publisher does): reflection
//! builds the descriptors of containerd's event protos and of everything
//! they import on first use, memory the shim would then keep for its life.

use std::os::fd::IntoRawFd;
use std::time::Duration;

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc;
use tokio::sync::{mpsc, oneshot};

/// An event's protobuf type name, as containerd decodes it.
pub trait Named {
    const TYPE_URL: &'static str;
}

macro_rules! named {
    ($($event:ident),*) => {
        $(impl Named for $event {
            const TYPE_URL: &'static str = concat!("containerd.events.", stringify!($event));
        })*
    };
}
named!(
    TaskCreate,
    TaskStart,
    TaskExit,
    TaskDelete,
    TaskExecAdded,
    TaskExecStarted,
    TaskPaused,
    TaskResumed,
    TaskOOM
);

/// How long an event is tried before it is dropped (containerd gone for
/// good): long enough for containerd to restart. The waits between tries
/// double from [`FIRST_WAIT`] up to [`LONGEST_WAIT`], so that an event made
/// while containerd was away goes out within half a second of its return
/// (a shim that containerd deletes meanwhile has only its last flush left).
const GIVE_UP: Duration = Duration::from_secs(30);
const FIRST_WAIT: Duration = Duration::from_millis(25);
const LONGEST_WAIT: Duration = Duration::from_millis(400);

enum Queued {
    Event(Envelope),
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// The queue to containerd.
pub struct Events {
    queue: mpsc::UnboundedSender<Queued>,
    namespace: String,
}

impl Events {
    /// Connects to containerd's ttrpc socket at `address` and starts the
    /// sender. Must run inside the runtime.
    pub fn connect(address: &str, namespace: String) -> std::io::Result<Self> {
        let client = dial(address)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_all(address.to_string(), client, rx));
        Ok(Self {
            queue: tx,
            namespace,
        })
    }

    /// Queues `ev` for containerd.
    pub async fn send<E: Event + Message + Named>(&self, ev: E) {
        let value = match ev.write_to_bytes() {
            Ok(v) => v,
            Err(e) => {
                log::error!("encode {}: {e}", E::TYPE_URL);
                return;
            }
        };
        let mut any = Any::new();
        any.type_url = E::TYPE_URL.to_string();
        any.value = value;
        let mut envelope = Envelope::new();
        envelope.timestamp = super::task::timestamp(std::time::SystemTime::now());
        envelope.namespace = self.namespace.clone();
        envelope.topic = ev.topic();
        envelope.event = MessageField::some(any);
        if self.queue.send(Queued::Event(envelope)).is_err() {
            log::error!("event sender is gone: {} dropped", E::TYPE_URL);
        }
    }

    /// Waits (at most `limit`) until every event queued so far has been
    /// sent: the shim calls it before it exits.
    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Queued::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

/// containerd answered and said no: sending it again would get the same
/// answer (and hold every later event back).
fn refused(e: &ttrpc::error::Error) -> bool {
    use ttrpc::proto::Code;
    match e {
        ttrpc::error::Error::RpcStatus(status) => !matches!(
            status.code(),
            Code::DEADLINE_EXCEEDED | Code::UNAVAILABLE | Code::CANCELLED | Code::UNKNOWN
        ),
        _ => false,
    }
}

fn dial(address: &str) -> std::io::Result<EventsClient> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    // SAFETY: `into_raw_fd` gives up the stream's ownership of the connected
    // socket, so the client becomes its only owner (and closes it once).
    let client = unsafe { Client::from_raw_unix_socket_fd(stream.into_raw_fd()) };
    Ok(EventsClient::new(client))
}

async fn send_all(
    address: String,
    mut client: EventsClient,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    while let Some(item) = rx.recv().await {
        let envelope = match item {
            Queued::Event(e) => e,
            Queued::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut req = ForwardRequest::new();
        req.envelope = MessageField::some(envelope);
        let topic = req.envelope.topic.clone();
        let (first, mut wait) = (std::time::Instant::now(), FIRST_WAIT);
        for attempt in 1.. {
            let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
            match client.forward(ctx, &req).await {
                Ok(_) => {
                    if attempt > 1 {
                        log::info!("published {topic} at try {attempt}");
                    }
                    break;
                }
                Err(e) if refused(&e) => {
                    log::error!("publish {topic}: {e}; containerd refused it");
                    break;
                }
                Err(e) if first.elapsed() >= GIVE_UP => {
                    log::error!("publish {topic}: {e}; dropped after {attempt} tries");
                    break;
                }
                Err(e) => {
                    if attempt == 1 {
                        log::warn!("publish {topic}: {e}; trying again");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                    // Whatever broke (containerd restarted, the connection
                    // or its client task closed), the next try goes over a
                    // new connection: the old one's errors are not worth
                    // telling apart, and a dial costs one connect.
                    match dial(&address) {
                        Ok(c) => client = c,
                        Err(e) if attempt == 1 => {
                            log::warn!("reconnect to containerd at {address}: {e}")
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::well_known_types::empty::Empty;
    use containerd_shim::protos::protobuf::MessageFull;
    use containerd_shim::protos::shim_async::create_events;
    use containerd_shim::protos::ttrpc::r#async::{transport::Listener, Server, TtrpcContext};
    use std::sync::{Arc, Mutex};

    /// containerd's event service, as far as the shim can tell: it records
    /// each envelope's topic and type URL.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String)>>);

    #[async_trait::async_trait]
    impl containerd_shim::protos::shim_async::Events for Recorder {
        async fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            let env = req.envelope.unwrap_or_default();
            let url = env
                .event
                .as_ref()
                .map(|a| a.type_url.clone())
                .unwrap_or_default();
            self.0.lock().unwrap().push((env.topic, url));
            Ok(Empty::new())
        }
    }

    async fn serve(path: &std::path::Path) -> (Server, Arc<Recorder>) {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let recorder = Arc::new(Recorder::default());
        let mut server = Server::new()
            .add_listener(Listener::try_from(listener).unwrap())
            .register_service(create_events(recorder.clone()));
        server.start().await.unwrap();
        (server, recorder)
    }

    /// Events arrive in the order they were made, typed by name; one made
    /// while containerd is away (its socket closed) is sent again over a
    /// new connection once it is back, and flush waits for it.
    #[tokio::test]
    async fn events_go_out_in_order_and_survive_a_containerd_restart() {
        let dir = crate::testfs::FakeDir::new("events", &[]);
        let path = dir.join("containerd.sock.ttrpc");
        let (mut server, first) = serve(&path).await;
        let events = Events::connect(path.to_str().unwrap(), "k8s.io".into()).unwrap();
        events.send(TaskCreate::default()).await;
        events.send(TaskStart::default()).await;
        events.send(TaskExit::default()).await;
        events.flush(Duration::from_secs(5)).await;
        assert_eq!(
            *first.0.lock().unwrap(),
            [
                ("/tasks/create", "containerd.events.TaskCreate"),
                ("/tasks/start", "containerd.events.TaskStart"),
                ("/tasks/exit", "containerd.events.TaskExit"),
            ]
            .map(|(t, u)| (t.to_string(), u.to_string()))
        );

        server.shutdown().await.unwrap();
        drop(server);
        // Long enough for the client to see its connection end: a send over
        // it then fails with an error of the client's own, not the socket's
        // (as for a shim whose containerd restarted while it was idle).
        tokio::time::sleep(Duration::from_millis(200)).await;
        events.send(TaskDelete::default()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_again, second) = serve(&path).await;
        events.flush(Duration::from_secs(10)).await;
        assert_eq!(
            *second.0.lock().unwrap(),
            [(
                "/tasks/delete".to_string(),
                "containerd.events.TaskDelete".to_string()
            )]
        );
    }

    /// The names tidal gives are protobuf's own (checked here through the
    /// reflection the shim avoids at run time).
    #[test]
    fn event_type_urls_are_the_protobuf_names() {
        fn check<E: MessageFull + Named>() {
            assert_eq!(E::TYPE_URL, E::descriptor().full_name());
        }
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskExit>();
        check::<TaskDelete>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
        check::<TaskOOM>();
    }
}
