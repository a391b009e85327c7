#![allow(dead_code)]

pub mod openapi;
pub mod rbac;
