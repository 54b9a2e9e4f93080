//! Which Ingresses belong to this controller.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use super::CompileOptions;

/// The legacy way to name a class, still common in older manifests.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the IngressClass that Ingresses without a class belong to.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Decides class membership from the options and the cluster's IngressClasses.
#[derive(Debug)]
pub(crate) struct ClassFilter<'a> {
    class_name: &'a str,
    /// Names of the IngressClasses whose controller is ours.
    our_classes: BTreeSet<&'a str>,
    /// Whether one of those is marked as the default class.
    default_is_ours: bool,
}

impl<'a> ClassFilter<'a> {
    pub fn new(
        classes: impl IntoIterator<Item = &'a IngressClass>,
        options: &'a CompileOptions,
    ) -> Self {
        let ours: Vec<&IngressClass> = classes
            .into_iter()
            .filter(|class| {
                class
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.controller.as_deref())
                    == Some(options.controller_name.as_str())
            })
            .collect();
        let default_is_ours = ours.iter().any(|class| {
            class
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|value| value == "true")
        });
        ClassFilter {
            class_name: &options.ingress_class,
            our_classes: ours
                .iter()
                .filter_map(|class| class.metadata.name.as_deref())
                .collect(),
            default_is_ours,
        }
    }

    pub fn is_ours(&self, ingress: &Ingress) -> bool {
        match class_of(ingress) {
            Some(class) => class == self.class_name || self.our_classes.contains(class),
            None => self.default_is_ours,
        }
    }
}

/// `spec.ingressClassName`, else the legacy annotation; an empty name is no name.
fn class_of(ingress: &Ingress) -> Option<&str> {
    let from_spec = ingress
        .spec
        .as_ref()
        .and_then(|spec| spec.ingress_class_name.as_deref());
    let from_annotation = || {
        ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(LEGACY_CLASS_ANNOTATION))
            .map(String::as_str)
    };
    from_spec
        .filter(|name| !name.is_empty())
        .or_else(|| from_annotation().filter(|name| !name.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::{ingress, ingress_class};
    use serde_json::json;

    fn options() -> CompileOptions {
        CompileOptions::default()
    }

    fn is_ours(classes: &[IngressClass], ingress: &Ingress) -> bool {
        let options = options();
        ClassFilter::new(classes, &options).is_ours(ingress)
    }

    fn with_class_name(name: &str) -> Ingress {
        ingress(
            "shop",
            "web",
            json!({}),
            json!({ "ingressClassName": name }),
        )
    }

    fn with_legacy_annotation(name: &str) -> Ingress {
        ingress(
            "shop",
            "web",
            json!({ "annotations": { LEGACY_CLASS_ANNOTATION: name } }),
            json!({}),
        )
    }

    fn without_class() -> Ingress {
        ingress("shop", "web", json!({}), json!({}))
    }

    #[test]
    fn class_name_equal_to_option_is_ours() {
        assert!(is_ours(&[], &with_class_name("sluice")));
        assert!(!is_ours(&[], &with_class_name("nginx")));
    }

    #[test]
    fn class_naming_an_ingress_class_with_our_controller_is_ours() {
        let classes = [
            ingress_class("edge", "sluice.dev/ingress-controller", false),
            ingress_class("nginx", "k8s.io/ingress-nginx", false),
        ];
        assert!(is_ours(&classes, &with_class_name("edge")));
        assert!(!is_ours(&classes, &with_class_name("nginx")));
        assert!(!is_ours(&classes, &with_class_name("missing")));
    }

    #[test]
    fn legacy_annotation_counts_when_spec_has_no_class() {
        let classes = [ingress_class(
            "edge",
            "sluice.dev/ingress-controller",
            false,
        )];
        assert!(is_ours(&classes, &with_legacy_annotation("sluice")));
        assert!(is_ours(&classes, &with_legacy_annotation("edge")));
        assert!(!is_ours(&classes, &with_legacy_annotation("nginx")));
    }

    #[test]
    fn spec_class_name_wins_over_legacy_annotation() {
        let both = ingress(
            "shop",
            "web",
            json!({ "annotations": { LEGACY_CLASS_ANNOTATION: "sluice" } }),
            json!({ "ingressClassName": "nginx" }),
        );
        assert!(!is_ours(&[], &both));
    }

    #[test]
    fn no_class_is_ours_only_with_our_default_class() {
        assert!(!is_ours(&[], &without_class()));
        let not_default = [ingress_class(
            "edge",
            "sluice.dev/ingress-controller",
            false,
        )];
        assert!(!is_ours(&not_default, &without_class()));
        let default = [ingress_class("edge", "sluice.dev/ingress-controller", true)];
        assert!(is_ours(&default, &without_class()));
        let others_default = [ingress_class("nginx", "k8s.io/ingress-nginx", true)];
        assert!(!is_ours(&others_default, &without_class()));
    }

    #[test]
    fn empty_class_name_is_no_class() {
        let default = [ingress_class("edge", "sluice.dev/ingress-controller", true)];
        assert!(is_ours(&default, &with_class_name("")));
        assert!(!is_ours(&[], &with_class_name("")));
    }

    #[test]
    fn custom_options_change_what_is_ours() {
        let options = CompileOptions {
            ingress_class: "internal".into(),
            controller_name: "example.com/other".into(),
            redis_configured: false,
            default_certificate: None,
        };
        let classes = [ingress_class("edge", "example.com/other", false)];
        let filter = ClassFilter::new(&classes, &options);
        assert!(filter.is_ours(&with_class_name("internal")));
        assert!(filter.is_ours(&with_class_name("edge")));
        assert!(!filter.is_ours(&with_class_name("sluice")));
    }
}
