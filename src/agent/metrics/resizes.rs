//! The resizes tidald routed, as Prometheus series: a count by outcome and
//! source, and a latency histogram. The resizer counts into them; they
//! import nothing of tidald, so whatever resizes (the API, the policy
//! engine, the trait controllers) does not depend on the rest of the
//! metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the resize latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// "ok", or the gRPC code's name of a refusal.
    outcome: String,
    /// Who asked (`source_label`).
    source: &'static str,
}

/// `tidal_resizes_total` and `tidal_resize_seconds` (clones share them).
#[derive(Debug, Clone)]
pub struct Resizes {
    count: Family<Outcome, Counter>,
    latency: Histogram,
}

impl Resizes {
    /// The series, registered in `registry`.
    pub fn registered(registry: &mut Registry) -> Resizes {
        let count = Family::<Outcome, Counter>::default();
        registry.register(
            "tidal_resizes",
            "Resizes routed by tidald, by outcome and source",
            count.clone(),
        );
        let latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "tidal_resize_seconds",
            "Time from a resize request to its answer",
            latency.clone(),
        );
        Resizes { count, latency }
    }

    /// Counts a resize (an update or a rollback) asked by `source` that
    /// took `seconds`.
    pub fn record(&self, outcome: &str, source: &str, seconds: f64) {
        self.count
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
                source: source_label(source),
            })
            .inc();
        self.latency.observe(seconds);
    }
}

/// A resize's source as a label, from a bounded set: `operator`, `policy`,
/// tidald's trait controllers by name, and `trait:other` for any other
/// `trait:NAME` a caller of the API gives (its names are the caller's).
pub fn source_label(source: &str) -> &'static str {
    match source {
        "operator" => "operator",
        "policy" => "policy",
        "kubelet" => "kubelet",
        "trait:cron-vertical-scaler" => "trait:cron-vertical-scaler",
        "trait:vertical-autoscaler" => "trait:vertical-autoscaler",
        _ if source.starts_with("trait:") => "trait:other",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_sources_are_a_bounded_set_of_labels() {
        for (source, label) in [
            ("operator", "operator"),
            ("policy", "policy"),
            ("trait:cron-vertical-scaler", "trait:cron-vertical-scaler"),
            ("trait:vertical-autoscaler", "trait:vertical-autoscaler"),
            ("trait:anything", "trait:other"),
            ("", "other"),
        ] {
            assert_eq!(source_label(source), label, "{source}");
        }
    }
}
