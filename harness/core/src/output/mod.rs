//! Output of `run` and `check`: a text table for people, JSON (serde) and JUnit for machines.

pub mod junit;
pub mod text;
