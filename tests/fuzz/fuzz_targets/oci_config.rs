#![no_main]
//! A bundle's `config.json`: arbitrary bytes as JSON, the whole OCI spec or
//! one member of a realistic one (`tidal_fuzz::graft`), through every pure
//! step the shim and its helper take on it: the mount propagation rewrite
//! (`propagation::plan_spec`), the shim's trait path (pod traits from the
//! spec's own annotations, then `enforce::tighten`), `tighten` with one of
//! three fixed `security-policy` traits, `enforce::tighten_exec` (the spec as
//! the container; the JSON as the exec's process), and `seccomp::stack` with
//! the JSON as the pod's profile under one of the built-in ones (the input's
//! length picks which).

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidal::traits::enforce::{tighten, tighten_exec};
use tidal_fuzz::{
    builtin_profiles, catalogue, check_error, check_exec, check_pod, check_stacked,
    check_tightened, exec_process, graft, policy_containers, policy_pods,
};

fuzz_target!(|data: &[u8]| {
    let json: Value = match serde_json::from_slice(data) {
        Ok(json) => json,
        Err(e) => return check_error(&e),
    };
    // The JSON as the whole spec, or as one member of a realistic one.
    let spec = graft(json.clone(), data);

    // The helper's rewrite before libcontainer reads the bundle.
    let mut rewritten = spec.clone();
    match tidal::helper::propagation::plan_spec(&mut rewritten) {
        Ok((_plan, changed)) => {
            assert_eq!(changed, rewritten != spec, "a change was not reported");
            if changed {
                let now = rewritten.pointer("/linux/rootfsPropagation");
                assert!(
                    ["shared", "slave", "private", "unbindable"]
                        .iter()
                        .any(|p| now == Some(&Value::from(*p))),
                    "rewritten to {now:?}"
                );
            }
            let again = tidal::helper::propagation::plan_spec(&mut rewritten.clone());
            assert!(
                matches!(again, Ok((_, false))),
                "rewritten twice: {again:?}"
            );
        }
        Err(e) => check_error(&e),
    }

    // The shim's path (enforce::apply_to_bundle without the file): the
    // spec's own annotations name the pod's traits.
    let annotations: Vec<(String, String)> = spec
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    match catalogue().pod_traits(annotations.iter().map(|(k, v)| (k, v))) {
        Ok(pod) => {
            check_pod(&pod);
            let mut tightened = spec.clone();
            match tighten(&mut tightened, &pod) {
                Ok(changed) => check_tightened(&spec, &tightened, &changed, &pod),
                Err(e) => check_error(&e),
            }
        }
        Err(e) => check_error(&e),
    }

    // One of the fixed security-policy traits on this spec (one per input:
    // stacking the built-in seccomp profile is most of a run's time).
    let pod = &policy_pods()[data.len() % policy_pods().len()];
    let mut tightened = spec.clone();
    match tighten(&mut tightened, pod) {
        Ok(changed) => check_tightened(&spec, &tightened, &changed, pod),
        Err(e) => check_error(&e),
    }

    // An exec: this spec as its container, and as its process.
    let mut process = exec_process().clone();
    match tighten_exec(&spec, &mut process, catalogue()) {
        Ok(changed) => check_exec(&spec, exec_process(), &process, changed),
        Err(e) => check_error(&e),
    }
    for container in policy_containers() {
        let mut process = json.clone();
        match tighten_exec(container, &mut process, catalogue()) {
            Ok(changed) => check_exec(container, &json, &process, changed),
            Err(e) => check_error(&e),
        }
    }

    // The JSON as the pod's seccomp profile under a built-in one.
    let required = &builtin_profiles()[data.len() % builtin_profiles().len()];
    let stacked = tidal::traits::seccomp::stack(Some(&json), required);
    check_stacked(&json, required, &stacked);
});
