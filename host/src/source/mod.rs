//! Reading from Kafka. So far: the offset tracker that decides what may be committed.

pub mod offsets;
