//! sockmatrix: run YAML socket cases on many kernels and record what each kernel did.
pub mod agent;
pub mod case;
pub mod errno;
pub mod exec;
pub mod host;
pub mod judge;
pub mod observe;
pub mod output;
pub mod select;
pub mod yaml;
