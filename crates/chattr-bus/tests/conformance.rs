//! Runs the bus conformance suite against [`InProcBus`].

use std::sync::Arc;

use chattr_bus::inproc::InProcBus;
use chattr_bus::DynBus;

async fn make_bus() -> DynBus {
    Arc::new(InProcBus::default())
}

chattr_bus::bus_conformance_tests!(make_bus());
