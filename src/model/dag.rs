//! The step graph of a pipeline: topological order (ties by name), cycle paths for diagnostics,
//! and the text, Graphviz and Mermaid renderings that `baton graph` prints.

use super::pipeline::Pipeline;
use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;
use std::collections::{BTreeMap, BTreeSet};

/// Edges as `step -> its upstreams`, by name. Unknown upstreams are ignored (validation reports
/// them separately).
pub type DependsOn<'a> = BTreeMap<&'a str, Vec<&'a str>>;

fn graph<'a>(deps: &DependsOn<'a>) -> DiGraphMap<&'a str, ()> {
    let mut g = DiGraphMap::new();
    for (step, ups) in deps {
        g.add_node(*step);
        for up in ups {
            if deps.contains_key(up) {
                g.add_edge(*step, *up, ());
            }
        }
    }
    g
}

/// Every dependency cycle, each as a closed path following `depends_on` (`a -> b -> a`: a
/// depends on b, b on a), starting at its smallest name. One path per strongly connected component.
pub fn cycles(deps: &DependsOn<'_>) -> Vec<Vec<String>> {
    let g = graph(deps);
    let mut found = Vec::new();
    for component in tarjan_scc(&g) {
        let members: BTreeSet<&str> = component.iter().copied().collect();
        let Some(&start) = members.iter().next() else {
            continue;
        };
        if members.len() == 1 && !g.contains_edge(start, start) {
            continue;
        }
        if let Some(mut path) = path_back_to(&g, &members, start) {
            path.push(start.to_string());
            found.push(path);
        }
    }
    found.sort();
    found
}

/// A simple path from `start` through `members` whose last node has an edge back to `start`;
/// breadth-first so the reported cycle is a shortest one.
fn path_back_to(
    g: &DiGraphMap<&str, ()>,
    members: &BTreeSet<&str>,
    start: &str,
) -> Option<Vec<String>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = BTreeSet::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<&str> = g.neighbors(node).collect();
        next.sort();
        for n in next {
            if n == start {
                let mut path = vec![node];
                let mut cur = node;
                while let Some(p) = parent.get(cur) {
                    path.push(p);
                    cur = p;
                }
                path.reverse();
                return Some(path.into_iter().map(str::to_string).collect());
            }
            if members.contains(n) && seen.insert(n) {
                parent.insert(n, node);
                queue.push_back(n);
            }
        }
    }
    None
}

/// Steps in an order where each comes after all its upstreams, ties broken by name; `None` when
/// there is a cycle.
pub fn topological_order<'a>(deps: &DependsOn<'a>) -> Option<Vec<&'a str>> {
    let mut remaining: BTreeMap<&str, usize> = deps
        .iter()
        .map(|(step, ups)| {
            let known: BTreeSet<&&str> = ups.iter().filter(|u| deps.contains_key(*u)).collect();
            (*step, known.len())
        })
        .collect();
    let mut ready: BTreeSet<&str> = remaining
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| *s)
        .collect();
    let mut order = Vec::new();
    while let Some(step) = ready.pop_first() {
        order.push(step);
        remaining.remove(step);
        for (down, ups) in deps {
            let ups: BTreeSet<&&str> = ups.iter().collect();
            if ups.contains(&step) {
                if let Some(n) = remaining.get_mut(down) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(down);
                    }
                }
            }
        }
    }
    (order.len() == deps.len()).then_some(order)
}

/// `baton graph --format text`: each step in order with its job and upstreams.
pub fn render_text(pipeline: &Pipeline) -> String {
    let mut out = format!("{}\n", pipeline.name);
    for step in &pipeline.steps {
        out.push_str(&format!("  {} (job {})", step.name, step.job_label()));
        if !step.depends_on.is_empty() {
            let ups: Vec<String> = step.depends_on.iter().map(|s| s.0.clone()).collect();
            out.push_str(&format!(" <- {}", ups.join(", ")));
        }
        out.push('\n');
    }
    out
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `baton graph --format dot`: Graphviz, edges from upstream to downstream.
pub fn render_dot(pipeline: &Pipeline) -> String {
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", quoted(&pipeline.name.0));
    for step in &pipeline.steps {
        out.push_str(&format!(
            "  {} [label={}];\n",
            quoted(&step.name.0),
            quoted(&format!("{}\\njob {}", step.name, step.job_label()))
        ));
    }
    for step in &pipeline.steps {
        for up in &step.depends_on {
            out.push_str(&format!(
                "  {} -> {};\n",
                quoted(&up.0),
                quoted(&step.name.0)
            ));
        }
    }
    out.push_str("}\n");
    out
}

/// `baton graph --format mermaid`: a left-to-right flowchart, edges from upstream to downstream.
pub fn render_mermaid(pipeline: &Pipeline) -> String {
    let ids: BTreeMap<&str, String> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.0.as_str(), format!("s{i}")))
        .collect();
    let id = |name: &str| ids.get(name).cloned().unwrap_or_else(|| name.to_string());
    let mut out = String::from("flowchart LR\n");
    for step in &pipeline.steps {
        out.push_str(&format!(
            "  {}[\"{}<br/>job {}\"]\n",
            id(&step.name.0),
            step.name.0.replace('"', "#quot;"),
            step.job_label().replace('"', "#quot;")
        ));
    }
    for step in &pipeline.steps {
        for up in &step.depends_on {
            out.push_str(&format!("  {} --> {}\n", id(&up.0), id(&step.name.0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_cycles() {
        let deps: DependsOn = BTreeMap::from([
            ("staging", vec![]),
            ("marts", vec!["staging"]),
            ("exposures", vec!["marts", "staging"]),
            ("a_snap", vec![]),
        ]);
        assert_eq!(
            topological_order(&deps).unwrap(),
            vec!["a_snap", "staging", "marts", "exposures"]
        );
        assert!(cycles(&deps).is_empty());
        let deps: DependsOn = BTreeMap::from([
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec!["d"]),
            ("e", vec!["a"]),
        ]);
        assert_eq!(topological_order(&deps), None);
        assert_eq!(
            cycles(&deps),
            vec![vec!["a", "b", "c", "a"], vec!["d", "d"]]
        );
    }
}
