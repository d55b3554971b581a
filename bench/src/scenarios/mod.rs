//! One module per benchmark; each starts what it measures and adds one section to the report.

pub mod adapter;
pub mod cold;
pub mod memory;
pub mod startup;
pub mod steady;
pub mod warm;
