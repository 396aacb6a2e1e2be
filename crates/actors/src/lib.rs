//! Actor threads that own shards of environments, wired to the driver by crossbeam channels.
