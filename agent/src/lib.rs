//! Wardbox agent: the supervisor daemon and its operator CLI, as a library so the binary stays
//! thin and tests drive the same code.

pub mod alerting;
pub mod audit;
pub mod backup;
pub mod boot;
pub mod cli;
pub mod clinical;
pub mod compliance;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod helper_line;
pub mod logging;
pub mod notify;
pub mod settings;
pub mod stages;
pub mod store;
pub mod update;
pub mod usb;
pub mod web;
