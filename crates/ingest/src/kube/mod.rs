pub mod lease;
pub mod status;
