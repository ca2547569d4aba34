#![no_main]
//! Pod annotations (see `tidal_fuzz::annotations` for the input format)
//! through the trait catalogue's strict parser; an accepted pod's traits are
//! then applied to a realistic CRI container spec, to its sandbox's, and to
//! an exec in the container, as the shim does.

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidal::traits::enforce::{tighten, tighten_exec};
use tidal_fuzz::{
    annotations, catalogue, check_error, check_exec, check_pod, check_tightened, container_spec,
    exec_process, sandbox_spec,
};

fuzz_target!(|data: &[u8]| {
    let annotations = annotations(data);
    let pod = match catalogue().pod_traits(&annotations) {
        Ok(pod) => pod,
        Err(e) => return check_error(&e),
    };
    check_pod(&pod);
    for spec in [container_spec(), sandbox_spec()] {
        let mut tightened = spec.clone();
        match tighten(&mut tightened, &pod) {
            Ok(changed) => check_tightened(spec, &tightened, &changed, &pod),
            Err(e) => check_error(&e),
        }
    }
    // An exec is held to the container's spec, which carries the annotations.
    let mut container = container_spec().clone();
    let map = container["annotations"]
        .as_object_mut()
        .expect("the fixture has annotations");
    for (k, v) in &annotations {
        map.insert(k.clone(), Value::String(v.clone()));
    }
    if tighten(&mut container, &pod).is_err() {
        return;
    }
    let mut process = exec_process().clone();
    match tighten_exec(&container, &mut process, catalogue()) {
        Ok(changed) => check_exec(&container, exec_process(), &process, changed),
        Err(e) => check_error(&e),
    }
});
