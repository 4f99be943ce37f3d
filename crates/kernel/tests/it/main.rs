//! Integration tests against real PostgreSQL and Redis. One binary, so the
//! kernel is linked once; modules by subsystem.

mod harness;

mod cli;
mod errors;
mod faults;
mod nginx;
mod observe;
mod plugin;
mod user;
