//! commit (in progress)
