//! lease (in progress)
