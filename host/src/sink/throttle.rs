//! Warnings about refused writes, at most one line per kind per interval: a broker that
//! refuses every record must not write a log line per record. The first refusal of a kind in
//! an interval is logged in full; the others are counted and summed up in one line when the
//! interval ends (the retry thread asks every 50 ms). The metrics count every one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often each kind of warning is written at most.
pub(super) const INTERVAL: Duration = Duration::from_secs(10);

/// Per kind of warning: when its interval began and how many were held back since.
#[derive(Default)]
pub(super) struct Throttle {
    kinds: Mutex<BTreeMap<&'static str, Window>>,
}

struct Window {
    began: Instant,
    held_back: u64,
}

impl Throttle {
    /// Whether a warning of `kind` should be written now (the first of its interval); if
    /// not, it is counted.
    pub(super) fn admit(&self, kind: &'static str, now: Instant) -> bool {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(kind) {
            Some(window) if now.duration_since(window.began) < INTERVAL => {
                window.held_back += 1;
                false
            }
            _ => {
                kinds.insert(
                    kind,
                    Window {
                        began: now,
                        held_back: 0,
                    },
                );
                true
            }
        }
    }

    /// The kinds whose interval ended with warnings held back, and how many; their
    /// intervals close (the next warning of the kind is written in full).
    pub(super) fn ended(&self, now: Instant) -> Vec<(&'static str, u64)> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = Vec::new();
        kinds.retain(|kind, window| {
            if now.duration_since(window.began) < INTERVAL {
                return true;
            }
            if window.held_back > 0 {
                ended.push((*kind, window.held_back));
            }
            false
        });
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_then_a_count() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        assert!(throttle.admit("retry", t0));
        assert!(throttle.admit("undeliverable", t0), "kinds are apart");
        for i in 1..=1000 {
            assert!(!throttle.admit("retry", t0 + Duration::from_millis(i)));
        }
        assert!(throttle.ended(t0 + Duration::from_secs(1)).is_empty());
        let later = t0 + INTERVAL + Duration::from_millis(1);
        assert_eq!(throttle.ended(later), [("retry", 1000)]);
        assert!(throttle.ended(later).is_empty(), "counted once");
        assert!(
            throttle.admit("retry", later),
            "a new interval begins in full"
        );
    }
}
