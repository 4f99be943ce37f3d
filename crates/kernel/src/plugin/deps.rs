//! Dependency resolution: topological order at load, cycles and missing
//! dependencies found and blamed on the plugins involved.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::PluginError;
use super::manifest::PluginName;

/// What resolution needs to know about one plugin.
pub struct Node<'a> {
    pub name: &'a PluginName,
    pub dependencies: &'a [PluginName],
    /// False when the plugin itself failed to load: its dependents cannot
    /// run either.
    pub usable: bool,
}

/// The outcome of resolution.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Usable plugins, each after all of its dependencies.
    pub order: Vec<PluginName>,
    /// Plugins disabled by resolution, with the reason.
    pub failed: BTreeMap<PluginName, PluginError>,
}

/// Orders `nodes` so every plugin follows its dependencies (Kahn's
/// algorithm, ties by name so the order is stable). A plugin on a cycle
/// gets [`PluginError::CircularDependency`] naming the cycle; a plugin
/// whose dependency is absent, unusable or itself failed gets
/// [`PluginError::MissingDependency`].
pub fn resolve(nodes: &[Node<'_>]) -> Resolution {
    let by_name: BTreeMap<&PluginName, &Node<'_>> = nodes.iter().map(|n| (n.name, n)).collect();
    let mut indegree: BTreeMap<&PluginName, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&PluginName, Vec<&PluginName>> = BTreeMap::new();
    for n in nodes {
        let known = n
            .dependencies
            .iter()
            .filter(|d| by_name.contains_key(d))
            .count();
        indegree.insert(n.name, known);
        for d in n.dependencies.iter().filter(|d| by_name.contains_key(d)) {
            dependents.entry(d).or_default().push(n.name);
        }
    }
    let mut ready: VecDeque<&PluginName> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut res = Resolution::default();
    let mut ok: BTreeSet<&PluginName> = BTreeSet::new();
    let mut visited: BTreeSet<&PluginName> = BTreeSet::new();
    while let Some(name) = ready.pop_front() {
        visited.insert(name);
        let node = by_name[name];
        let blocker = node.dependencies.iter().find(|d| !ok.contains(d));
        match blocker {
            Some(dep) => {
                res.failed.insert(
                    name.clone(),
                    PluginError::MissingDependency {
                        plugin: name.to_string(),
                        dependency: dep.to_string(),
                    },
                );
            }
            None if node.usable => {
                ok.insert(name);
                res.order.push(name.clone());
            }
            // Its own load error is already recorded by the caller.
            None => {}
        }
        let mut next: Vec<&PluginName> = Vec::new();
        for dependent in dependents.get(name).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(dependent) {
                *d -= 1;
                if *d == 0 {
                    next.push(dependent);
                }
            }
        }
        next.sort();
        ready.extend(next);
    }
    // Whatever Kahn's algorithm could not reach is on a cycle or depends
    // on one.
    let stuck: BTreeSet<&PluginName> = nodes
        .iter()
        .map(|n| n.name)
        .filter(|n| !visited.contains(n))
        .collect();
    for name in &stuck {
        let err = match find_cycle(name, &by_name, &stuck) {
            Some(cycle) => PluginError::CircularDependency {
                plugin: name.to_string(),
                cycle,
            },
            None => PluginError::MissingDependency {
                plugin: name.to_string(),
                dependency: by_name[name]
                    .dependencies
                    .iter()
                    .find(|d| stuck.contains(d))
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            },
        };
        res.failed.insert((*name).clone(), err);
    }
    res
}

/// A path `start -> ... -> start` through `within`, if `start` is on a
/// cycle.
fn find_cycle(
    start: &PluginName,
    by_name: &BTreeMap<&PluginName, &Node<'_>>,
    within: &BTreeSet<&PluginName>,
) -> Option<String> {
    // Depth-first search keeping the path; small graphs, so no memo.
    fn dfs<'a>(
        at: &'a PluginName,
        start: &PluginName,
        by_name: &BTreeMap<&'a PluginName, &Node<'a>>,
        within: &BTreeSet<&PluginName>,
        path: &mut Vec<&'a PluginName>,
        seen: &mut BTreeSet<&'a PluginName>,
    ) -> bool {
        let Some(node) = by_name.get(at) else {
            return false;
        };
        for dep in node.dependencies {
            if dep == start {
                return true;
            }
            if within.contains(dep) && seen.insert(dep) {
                path.push(dep);
                if dfs(dep, start, by_name, within, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::new();
    let node = by_name.get(start)?;
    if dfs(node.name, start, by_name, within, &mut path, &mut seen) {
        path.push(start);
        Some(
            path.iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(" -> "),
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> PluginName {
        PluginName::parse(s).expect("name")
    }

    #[test]
    fn dependencies_come_first_and_cycles_are_named() {
        let (a, b, c, d, e, f) = (n("a"), n("b"), n("c"), n("d"), n("e"), n("f"));
        let deps_a = [b.clone()];
        let deps_c = [d.clone()];
        let deps_d = [c.clone()];
        let deps_e = [c.clone()];
        let deps_f = [n("ghost")];
        let nodes = [
            Node {
                name: &a,
                dependencies: &deps_a,
                usable: true,
            },
            Node {
                name: &b,
                dependencies: &[],
                usable: true,
            },
            Node {
                name: &c,
                dependencies: &deps_c,
                usable: true,
            },
            Node {
                name: &d,
                dependencies: &deps_d,
                usable: true,
            },
            Node {
                name: &e,
                dependencies: &deps_e,
                usable: true,
            },
            Node {
                name: &f,
                dependencies: &deps_f,
                usable: true,
            },
        ];
        let r = resolve(&nodes);
        assert_eq!(r.order, vec![b.clone(), a.clone()]);
        assert!(
            matches!(&r.failed[&c], PluginError::CircularDependency { cycle, .. } if cycle == "c -> d -> c")
        );
        assert!(matches!(
            &r.failed[&d],
            PluginError::CircularDependency { .. }
        ));
        assert!(
            matches!(&r.failed[&e], PluginError::MissingDependency { dependency, .. } if dependency == "c")
        );
        assert!(
            matches!(&r.failed[&f], PluginError::MissingDependency { dependency, .. } if dependency == "ghost")
        );
    }

    #[test]
    fn dependents_of_an_unusable_plugin_fail() {
        let (a, b) = (n("a"), n("b"));
        let deps_a = [b.clone()];
        let nodes = [
            Node {
                name: &a,
                dependencies: &deps_a,
                usable: true,
            },
            Node {
                name: &b,
                dependencies: &[],
                usable: false,
            },
        ];
        let r = resolve(&nodes);
        assert!(r.order.is_empty());
        assert!(matches!(
            &r.failed[&a],
            PluginError::MissingDependency { .. }
        ));
        assert!(!r.failed.contains_key(&b));
    }
}
