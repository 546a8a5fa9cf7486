//! mover (in progress)
