//! End-to-end tests of the floor service: one binary, every API test on SQLite and on
//! PostgreSQL (when `DATABASE_URL` is set), each on a fresh database, driving a real
//! server over HTTP, WebSocket and SSE.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

mod actors;
mod agent_outbox;
mod agent_run;
mod agents;
mod answers;
mod api;
mod auth;
mod bad_input;
mod brain;
mod container;
mod dashboard;
mod hook;
mod hosting;
mod install;
mod leases;
mod mcp;
mod models;
mod nodes;
mod nodes_example;
mod passive;
mod process;
mod recover;
mod redaction;
mod sidecar;
mod slack;
mod slack_fake;
mod streams;
mod tasks;
mod tls;
mod traces;
