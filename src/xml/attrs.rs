//! Setting and removing plain (namespace-less) attributes on a `minidom::Element`, which
//! minidom offers only through its attribute map and rxml's name type.

use minidom::Element;

pub fn set_attr(el: &mut Element, name: &'static str, value: impl Into<String>) {
    let Ok(name) = rxml::NcName::try_from(name) else {
        return;
    };
    el.attrs_mut()
        .insert(rxml::Namespace::NONE, name, value.into());
}

pub fn remove_attr(el: &mut Element, name: &'static str) {
    if let Ok(name) = rxml::NcName::try_from(name) {
        el.attrs_mut().remove(&rxml::Namespace::NONE, &name);
    }
}
