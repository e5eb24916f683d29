//! `noop`: passes every record unchanged.
//!
//! It measures the cost of the plugin boundary itself: a batch crosses into the component and
//! a list of `pass` verdicts comes back, with no work in between.
//!
//! # Config
//!
//! None. Any keys are accepted and ignored, so tests can give it any config.

use switchyard_plugin_sdk::{Batch, Config, Plugin, Record, Verdict};

/// Passes every record.
pub struct Noop;

impl Plugin for Noop {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Self)
    }

    fn process(&mut self, _record: &Record) -> Verdict {
        Verdict::Pass
    }

    fn process_batch(&mut self, batch: &Batch) -> Vec<Verdict> {
        vec![Verdict::Pass; batch.len()]
    }
}

switchyard_plugin_sdk::export!(Noop);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_record() {
        let mut noop = Noop::init(&Config::from_pairs([("anything", "goes")])).unwrap();
        let batch = Batch::new("t", 0, vec![Record::new(), Record::new().with_value("x")]);
        assert_eq!(noop.process_batch(&batch), [Verdict::Pass, Verdict::Pass]);
        assert_eq!(noop.process(&Record::new()), Verdict::Pass);
        assert!(noop.process_batch(&Batch::new("t", 0, vec![])).is_empty());
    }
}
