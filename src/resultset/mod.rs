//! Result sets: saved per-kernel results, and what is done with them (diff, history,
//! merge of shards, the fixes view, sharding of the work).
pub mod diff;
pub mod fixes;
pub mod history;
pub mod merge;
pub mod results;
pub mod shard;
