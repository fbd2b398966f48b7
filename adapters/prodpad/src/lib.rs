//! scim-bridge adapter for prodpad (being written).
