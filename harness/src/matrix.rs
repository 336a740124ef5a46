//! The scenario matrix: four axes, their 54 cells, stable cell ids and cell filters.
//!
//! A cell id is the text `thread=detached,self=leaked,exc=none,fix=off`: every axis, in this order, with
//! the value's name. Ids are stable (snapshots and records are keyed by them), so renaming a value is a
//! breaking change of the record schema.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Declares one axis: an enum with its text names, in matrix order.
macro_rules! axis {
    ($(#[$meta:meta])* $name:ident, $key:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The axis name as it appears in cell ids.
            pub const KEY: &'static str = $key;
            /// Every value, in matrix order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value's name as it appears in cell ids.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError::UnknownValue {
                        axis: $key,
                        value: s.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

axis! {
    /// How the thread ends: detached, joined by the creator, or joinable and never joined.
    ThreadKind, "thread" {
        Detached = "detached",
        Joined = "joined",
        Unjoined = "unjoined",
    }
}

axis! {
    /// Extra references the thread takes to itself (`mach_thread_self()`, or a thread pidfd on Linux).
    SelfRef, "self" {
        /// No extra reference.
        None = "none",
        /// K extra references, never released by the thread.
        Leaked = "leaked",
        /// K extra references, each released by the thread before it returns.
        Balanced = "balanced",
    }
}

axis! {
    /// Per-thread exception machinery installed by the thread.
    Exc, "exc" {
        /// None installed.
        None = "none",
        /// Installed, then torn down before the thread returns.
        Restored = "restored",
        /// Installed and left in place.
        Leaked = "leaked",
    }
}

axis! {
    /// Clozure CL's balancing fix, run from a thread-specific-data destructor at thread exit.
    Fix, "fix" {
        Off = "off",
        On = "on",
    }
}

/// The axis names, in the order they appear in a cell id.
pub const AXES: [&str; 4] = [ThreadKind::KEY, SelfRef::KEY, Exc::KEY, Fix::KEY];

/// One scenario of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cell {
    pub thread: ThreadKind,
    #[serde(rename = "self")]
    pub self_ref: SelfRef,
    pub exc: Exc,
    pub fix: Fix,
}

impl Cell {
    /// Every cell, in matrix order (thread varies slowest, fix fastest).
    pub fn all() -> Vec<Cell> {
        let mut cells = Vec::with_capacity(54);
        for &thread in ThreadKind::ALL {
            for &self_ref in SelfRef::ALL {
                for &exc in Exc::ALL {
                    for &fix in Fix::ALL {
                        cells.push(Cell { thread, self_ref, exc, fix });
                    }
                }
            }
        }
        cells
    }

    /// The cell id, also available through `Display`.
    pub fn id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Cell { thread, self_ref, exc, fix } = self;
        write!(f, "{}={thread},{}={self_ref},{}={exc},{}={fix}", ThreadKind::KEY, SelfRef::KEY, Exc::KEY, Fix::KEY)
    }
}

/// What is wrong with a cell id or a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("`{item}` is not of the form axis=value")]
    NotAPair { item: String },
    #[error("unknown axis `{axis}` (axes: thread, self, exc, fix)")]
    UnknownAxis { axis: String },
    #[error("unknown value `{value}` for axis `{axis}` (values: {expected})")]
    UnknownValue { axis: &'static str, value: String, expected: String },
    #[error("axis `{axis}` is given twice")]
    DuplicateAxis { axis: &'static str },
    #[error("axis `{axis}` is missing")]
    MissingAxis { axis: &'static str },
    #[error("empty filter")]
    Empty,
}

/// One `axis=value` item, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Thread(ThreadKind),
    SelfRef(SelfRef),
    Exc(Exc),
    Fix(Fix),
}

fn parse_items(text: &str) -> impl Iterator<Item = Result<Item, ParseError>> + '_ {
    text.split(',').map(|item| {
        let item = item.trim();
        let (axis, value) = item.split_once('=').ok_or_else(|| ParseError::NotAPair { item: item.to_owned() })?;
        let value = value.trim();
        match axis.trim() {
            ThreadKind::KEY => value.parse().map(Item::Thread),
            SelfRef::KEY => value.parse().map(Item::SelfRef),
            Exc::KEY => value.parse().map(Item::Exc),
            Fix::KEY => value.parse().map(Item::Fix),
            other => Err(ParseError::UnknownAxis { axis: other.to_owned() }),
        }
    })
}

impl FromStr for Cell {
    type Err = ParseError;

    /// Parses a full cell id. Axes may come in any order; each must appear exactly once.
    fn from_str(s: &str) -> Result<Cell, ParseError> {
        let (mut thread, mut self_ref, mut exc, mut fix) = (None, None, None, None);
        fn set<T>(slot: &mut Option<T>, value: T, axis: &'static str) -> Result<(), ParseError> {
            match slot.replace(value) {
                Some(_) => Err(ParseError::DuplicateAxis { axis }),
                None => Ok(()),
            }
        }
        for item in parse_items(s) {
            match item? {
                Item::Thread(v) => set(&mut thread, v, ThreadKind::KEY)?,
                Item::SelfRef(v) => set(&mut self_ref, v, SelfRef::KEY)?,
                Item::Exc(v) => set(&mut exc, v, Exc::KEY)?,
                Item::Fix(v) => set(&mut fix, v, Fix::KEY)?,
            }
        }
        Ok(Cell {
            thread: thread.ok_or(ParseError::MissingAxis { axis: ThreadKind::KEY })?,
            self_ref: self_ref.ok_or(ParseError::MissingAxis { axis: SelfRef::KEY })?,
            exc: exc.ok_or(ParseError::MissingAxis { axis: Exc::KEY })?,
            fix: fix.ok_or(ParseError::MissingAxis { axis: Fix::KEY })?,
        })
    }
}

/// Selects cells by any subset of axis values: `thread=unjoined`, `self=leaked,fix=on`.
///
/// Within one filter, values of the same axis are alternatives (`thread=joined,thread=unjoined` selects
/// both) and different axes must all match. An axis the filter does not name matches every value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    thread: Vec<ThreadKind>,
    self_ref: Vec<SelfRef>,
    exc: Vec<Exc>,
    fix: Vec<Fix>,
}

impl Filter {
    /// The filter that selects every cell.
    pub fn any() -> Filter {
        Filter::default()
    }

    pub fn matches(&self, cell: &Cell) -> bool {
        fn ok<T: PartialEq>(allowed: &[T], value: &T) -> bool {
            allowed.is_empty() || allowed.contains(value)
        }
        let Cell { thread, self_ref, exc, fix } = cell;
        ok(&self.thread, thread) && ok(&self.self_ref, self_ref) && ok(&self.exc, exc) && ok(&self.fix, fix)
    }
}

impl FromStr for Filter {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Filter, ParseError> {
        if s.trim().is_empty() {
            return Err(ParseError::Empty);
        }
        // `all`: every cell (for `run --cell all --scenario all`).
        if s.trim() == "all" {
            return Ok(Filter::default());
        }
        let mut filter = Filter::default();
        for item in parse_items(s) {
            match item? {
                Item::Thread(v) => filter.thread.push(v),
                Item::SelfRef(v) => filter.self_ref.push(v),
                Item::Exc(v) => filter.exc.push(v),
                Item::Fix(v) => filter.fix.push(v),
            }
        }
        Ok(filter)
    }
}

/// The cells selected by any of `filters` (all cells when there is none), in matrix order.
pub fn select(filters: &[Filter]) -> Vec<Cell> {
    Cell::all().into_iter().filter(|cell| filters.is_empty() || filters.iter().any(|f| f.matches(cell))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_matrix_has_54_distinct_cells() {
        let cells = Cell::all();
        assert_eq!(cells.len(), 54);
        let ids: std::collections::BTreeSet<String> = cells.iter().map(Cell::id).collect();
        assert_eq!(ids.len(), 54);
        assert_eq!(cells[0].id(), "thread=detached,self=none,exc=none,fix=off");
        assert_eq!(cells[53].id(), "thread=unjoined,self=balanced,exc=leaked,fix=on");
    }

    #[test]
    fn filters_select_by_any_subset_of_axes() {
        let f = |s: &str| select(&[s.parse::<Filter>().unwrap()]);
        assert_eq!(f("thread=unjoined").len(), 18);
        assert_eq!(f("self=leaked,fix=on").len(), 9);
        assert_eq!(f("thread=joined,thread=unjoined,exc=none").len(), 12);
        assert_eq!(f("thread=detached,self=leaked,exc=none,fix=off").len(), 1);
        let two = select(&["fix=on".parse().unwrap(), "fix=off".parse().unwrap()]);
        assert_eq!(two.len(), 54);
        assert_eq!(select(&[]).len(), 54);
    }

    #[test]
    fn bad_ids_and_filters_name_what_is_wrong() {
        let err = |s: &str| s.parse::<Filter>().unwrap_err().to_string();
        assert_eq!(
            err("thread=sleepy"),
            "unknown value `sleepy` for axis `thread` (values: detached, joined, unjoined)"
        );
        assert_eq!(err("colour=red"), "unknown axis `colour` (axes: thread, self, exc, fix)");
        assert_eq!(err("detached"), "`detached` is not of the form axis=value");
        assert_eq!(err(""), "empty filter");
        let cell_err = |s: &str| s.parse::<Cell>().unwrap_err().to_string();
        assert_eq!(cell_err("thread=joined,self=none,exc=none"), "axis `fix` is missing");
        assert_eq!(cell_err("thread=joined,thread=joined,self=none,exc=none,fix=on"), "axis `thread` is given twice");
    }

    fn any_cell() -> impl Strategy<Value = Cell> {
        (0..54usize).prop_map(|i| Cell::all()[i])
    }

    proptest! {
        #[test]
        fn ids_round_trip(cell in any_cell()) {
            prop_assert_eq!(cell.id().parse::<Cell>().unwrap(), cell);
        }

        #[test]
        fn ids_parse_in_any_axis_order(cell in any_cell(), order in Just([0usize, 1, 2, 3]).prop_shuffle()) {
            let id = cell.id();
            let parts: Vec<&str> = id.split(',').collect();
            let shuffled: Vec<&str> = order.iter().map(|&i| parts[i]).collect();
            prop_assert_eq!(shuffled.join(",").parse::<Cell>().unwrap(), cell);
        }

        #[test]
        fn a_cell_id_used_as_a_filter_selects_exactly_that_cell(cell in any_cell()) {
            let selected = select(&[cell.id().parse().unwrap()]);
            prop_assert_eq!(selected, vec![cell]);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,60}") {
            let _ = text.parse::<Cell>();
            let _ = text.parse::<Filter>();
        }
    }
}
