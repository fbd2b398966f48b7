//! scim-bridge adapter for promapp (being written).
