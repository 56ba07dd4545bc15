//! Shared support for the integration tests and fuzz targets: the reference
//! model of the aggregator.
#![allow(missing_docs)]

pub mod model;
