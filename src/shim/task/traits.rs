//! Trait enforcement on the shim's path: a container's spec tightened by its
//! pod's traits before Create, an exec's process held to them. Each failure
//! keeps its real code: the pod's own bad annotations are InvalidArgument,
//! the node's broken catalogue FailedPrecondition, failed I/O Internal.

use std::path::Path;

use super::super::error::{Error, Result};

/// The node's trait catalogue, read once per shim.
pub(crate) fn catalogue() -> &'static std::result::Result<crate::traits::Catalogue, String> {
    static CATALOGUE: std::sync::OnceLock<std::result::Result<crate::traits::Catalogue, String>> =
        std::sync::OnceLock::new();
    CATALOGUE.get_or_init(crate::traits::Catalogue::node)
}

/// Applies the traits named in the bundle's `config.json` (see
/// `traits::enforce::apply_to_bundle`); returns what was tightened.
pub(super) fn apply_to_bundle(bundle: &Path) -> Result<Vec<String>> {
    Ok(crate::traits::enforce::apply_to_bundle(
        &bundle.join("config.json"),
        catalogue(),
    )?)
}

/// An exec's process spec held to its container's traits (see
/// `traits::enforce::tighten_exec`); unchanged for containers without them.
/// `what` names the exec in messages.
pub(super) fn held_to_traits(bundle: &Path, process: &str, what: &str) -> Result<String> {
    let path = bundle.join("config.json");
    let config = std::fs::read(&path).map_err(|e| {
        Error::Internal(format!(
            "{what}: read the container's spec {}: {e}",
            path.display()
        ))
    })?;
    let container: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| Error::InvalidArgument(format!("{what}: the container's spec: {e}")))?;
    let has_traits = container
        .get("annotations")
        .and_then(|a| a.as_object())
        .is_some_and(|a| {
            a.keys()
                .any(|k| k.starts_with(crate::annotations::TRAIT_PREFIX))
        });
    if !has_traits {
        return Ok(process.to_string());
    }
    let catalogue = catalogue().as_ref().map_err(|e| {
        Error::FailedPrecondition(format!(
            "tidal refused {what}: the node's trait catalogue is broken: {e}"
        ))
    })?;
    let mut value: serde_json::Value = serde_json::from_str(process)
        .map_err(|e| Error::InvalidArgument(format!("{what}: process spec: {e}")))?;
    let changed = crate::traits::enforce::tighten_exec(&container, &mut value, catalogue)
        .map_err(|e| Error::InvalidArgument(format!("tidal refused {what}: {e}")))?;
    if changed {
        return serde_json::to_string(&value)
            .map_err(|e| Error::Internal(format!("{what}: encode process spec: {e}")));
    }
    Ok(process.to_string())
}
