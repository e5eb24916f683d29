//! `noop`: passes every record unchanged.
//!
//! It measures the cost of the plugin boundary itself: a batch crosses into the component and
//! a list of `pass` verdicts comes back, with no work in between.
//!
//! # Config
//!
//! None. Any keys are accepted and ignored (the SDK's function form), so tests can give it any
//! config.

use switchyard_plugin_sdk::{Record, Verdict};

/// Passes every record.
pub fn noop(_record: &Record) -> Verdict {
    Verdict::Pass
}

switchyard_plugin_sdk::export!(fn noop);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_record() {
        assert_eq!(noop(&Record::new()), Verdict::Pass);
        assert_eq!(noop(&Record::new().with_value("x")), Verdict::Pass);
    }
}
