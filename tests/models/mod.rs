//! Executable models shared by the property tests (`tests/http/properties.rs`,
//! run by `cargo test`) and the fuzz targets (`fuzz/`).
#![allow(dead_code)]

pub mod last_event_id;
pub mod manager;
