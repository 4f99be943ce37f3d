//! Integration tests against real PostgreSQL and Redis. One binary, so the
//! kernel is linked once; modules by subsystem.

mod harness;

mod access;
mod admin;
mod batch;
mod cache;
mod category;
mod cli;
mod content;
mod cron;
mod csrf;
mod embedded;
mod errors;
mod failover;
mod faults;
mod files;
mod kv;
mod layering;
mod login_flood;
mod nginx;
mod observe;
mod openapi;
mod pages;
mod pages_browser;
mod plugin;
mod queue;
mod roles;
mod search;
mod stage;
mod storage;
mod user;
mod user_manage;
