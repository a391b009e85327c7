#![allow(dead_code)]

pub mod openapi;
pub mod rbac;

/// An HTTP client for what a test does by hand (merging, reading the emulators). It sends a
/// User-Agent, as GitHub requires of every client.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .user_agent("upkeep-test")
        .build()
        .expect("client")
}
