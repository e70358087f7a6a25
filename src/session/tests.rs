//! The lifecycle of one session in memory: byte vectors and a fake clock,
//! no socket and no sleep.

use super::*;
