//! scim-bridge adapter for prompt (being written).
