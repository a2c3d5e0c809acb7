//! The literal automaton as a plain transition table, for the hot loop.
//!
//! The aho-corasick crate builds the DFA (case folding, failure links, every
//! pattern that ends in a state); this copies its transitions into a table the
//! scanning loop can keep in registers: a byte's column from a 256-entry
//! array, the next state from one `u16` array (premultiplied, so a lookup is
//! an add and a load; 1183 states of 36 columns, 85 KB: the walk waits on
//! these loads, so the table is kept small; a `u16` table at `state << 7 |
//! column` measured slower, since its rows were as long as `u32` ones),
//! and the states in which a pattern ends numbered first, so "a match ends
//! here" is one comparison. Going through the crate's
//! `Automaton` trait from a `static`, the compiler reloads the DFA's fields at
//! every byte (the loop also writes to the heap, and the static may change
//! behind its back as far as it knows).

use aho_corasick::automaton::Automaton;
#[cfg(test)]
use aho_corasick::automaton::StateID;
use aho_corasick::dfa::DFA;
use aho_corasick::Anchored;

pub(super) struct Table {
    /// The automaton the table was read from: it says which patterns end in a
    /// match state.
    pub(super) dfa: DFA,
    /// Byte to column: bytes that lead every state to the same state share one.
    columns: [u8; 256],
    /// `trans[state + column]`, states premultiplied by the number of columns.
    trans: Vec<u16>,
    /// Premultiplied states below this are match states.
    matching: u32,
    start: u32,
    /// This table's state (divided by the number of columns) to the DFA's,
    /// and that number, for the tests that compare the two.
    #[cfg(test)]
    states: Vec<StateID>,
    #[cfg(test)]
    width: u32,
    /// A premultiplied state divided by the width, exactly, without a
    /// division: shifted right by the width's trailing zeros, then
    /// multiplied by the inverse of its odd part modulo 2^32.
    shift: u32,
    inverse: u32,
    /// The patterns ending in each match state (by index): `(pattern,
    /// length)`, those of state `i` at `ending[ending_from[i]..ending_from[i
    /// + 1]]`, in the DFA's order.
    ending: Vec<(u32, u32)>,
    ending_from: Vec<u32>,
}

impl Table {
    /// The table of `dfa`, an unanchored, ASCII case-insensitive DFA
    /// without a prefilter, built from `patterns`.
    ///
    /// Cheap to build (it runs on the first scan, within its time budget,
    /// in debug builds too): no hashing, and each state is read once per
    /// column, not per byte. The columns come from the patterns: a byte
    /// that is in no pattern leads every state where any other such byte
    /// does (back to the start of the longest pattern prefix that ends
    /// there, which it cannot extend), and an ASCII letter where its other
    /// case does; every other byte has a column of its own.
    pub(super) fn new<'p>(dfa: DFA, patterns: impl IntoIterator<Item = &'p str>) -> Self {
        const OTHER: usize = 256;
        let mut in_pattern = [false; 256];
        for p in patterns {
            for &c in p.as_bytes() {
                in_pattern[usize::from(c.to_ascii_lowercase())] = true;
            }
        }
        let mut column_of_key = [u8::MAX; 257];
        let mut representative: Vec<u8> = Vec::new();
        let mut columns = [0u8; 256];
        for byte in 0..=255u8 {
            let folded = byte.to_ascii_lowercase();
            let key = if in_pattern[usize::from(folded)] {
                usize::from(folded)
            } else {
                OTHER
            };
            if column_of_key[key] == u8::MAX {
                // At most 255 columns: 256 bytes, the two cases of a letter
                // share one.
                column_of_key[key] = u8::try_from(representative.len()).unwrap_or(u8::MAX - 1);
                representative.push(byte);
            }
            columns[usize::from(byte)] = column_of_key[key];
        }
        // A panic here is a broken invariant: the DFA is built unanchored.
        let start = dfa.start_state(Anchored::No).expect("unanchored DFA");
        // Every state reachable from the start, in the order first met; the
        // DFA's state ids are dense, so a vector maps them.
        const UNSEEN: usize = usize::MAX;
        let mut order = vec![start];
        let mut seen = vec![UNSEEN; start.as_usize() + 1];
        seen[start.as_usize()] = 0;
        let mut k = 0;
        while k < order.len() {
            let from = order[k];
            for &byte in &representative {
                let to = dfa.next_state(Anchored::No, from, byte);
                if to.as_usize() >= seen.len() {
                    seen.resize(to.as_usize() + 1, UNSEEN);
                }
                if seen[to.as_usize()] == UNSEEN {
                    seen[to.as_usize()] = order.len();
                    order.push(to);
                }
            }
            k += 1;
        }
        // Match states first.
        order.sort_by_key(|&s| !dfa.is_match(s));
        let matching = order.iter().take_while(|&&s| dfa.is_match(s)).count();
        for (i, s) in order.iter().enumerate() {
            seen[s.as_usize()] = i;
        }
        let width = representative.len();
        // A panic here is a broken invariant: 1183 states of 36 columns, a
        // table under 2^16 entries (so every premultiplied state is a u16,
        // and fits beside a lane and an offset in a found match end).
        assert!(order.len() * width <= 1 << 16, "a table under 2^16 entries");
        let premultiplied = |i: usize| u32::try_from(i * width).expect("a table under 2^16 entries");
        let mut trans = Vec::with_capacity(order.len() * width);
        for &s in &order {
            for &byte in &representative {
                let to = seen[dfa.next_state(Anchored::No, s, byte).as_usize()];
                trans.push(u16::try_from(to * width).expect("a table under 2^16 entries"));
            }
        }
        let (mut ending, mut ending_from) = (Vec::new(), vec![0]);
        for &s in &order[..matching] {
            for k in 0..dfa.match_len(s) {
                let pattern = dfa.match_pattern(s, k);
                // A panic here is a broken invariant: a few hundred patterns
                // of a few bytes each.
                let length = u32::try_from(dfa.pattern_len(pattern)).expect("a short pattern");
                ending.push((pattern.as_u32(), length));
            }
            ending_from.push(u32::try_from(ending.len()).expect("a few hundred patterns"));
        }
        let width = premultiplied(1);
        let shift = width.trailing_zeros();
        // Newton's iteration doubles the bits of the inverse that are right;
        // an odd number is its own inverse modulo 8 (three bits).
        let odd = width >> shift;
        let mut inverse = odd;
        for _ in 0..4 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        Table {
            start: premultiplied(seen[start.as_usize()]),
            matching: premultiplied(matching),
            #[cfg(test)]
            width,
            shift,
            inverse,
            ending,
            ending_from,
            dfa,
            columns,
            trans,
            #[cfg(test)]
            states: order,
        }
    }

    /// This table's state divided by the number of columns: its index.
    fn index(&self, state: u32) -> usize {
        (state >> self.shift).wrapping_mul(self.inverse) as usize
    }

    /// The patterns that end in a match state of this table: `(pattern,
    /// length)`, in the DFA's order.
    pub(super) fn ending(&self, state: u32) -> &[(u32, u32)] {
        let i = self.index(state);
        &self.ending[self.ending_from[i] as usize..self.ending_from[i + 1] as usize]
    }

    /// Where a pattern ends in `b`, each lane of [`LANES`] walked over its
    /// stretch (`lanes` of them in use, each read from `warm_up` bytes
    /// before it without reporting): the index of the byte that led to a
    /// match state and the state, per lane, in order; see [`super::literals`].
    pub(super) fn match_ends(&self, b: &[u8], lanes: usize, warm_up: usize) -> [Vec<(usize, u32)>; LANES] {
        let (trans, columns, matching) = (&self.trans[..], &self.columns, self.matching);
        let step =
            |state: u32, byte: u8| u32::from(trans[state as usize + usize::from(columns[usize::from(byte)])]);
        let bounds: [usize; LANES + 1] = std::array::from_fn(|k| b.len() * k.min(lanes) / lanes);
        let mut ends: [Vec<(usize, u32)>; LANES] = Default::default();
        let mut states = [self.start; LANES];
        for (k, state) in states.iter_mut().enumerate().skip(1) {
            let from = bounds[k];
            if from < b.len() {
                for &byte in &b[from.saturating_sub(warm_up)..from] {
                    *state = step(*state, byte);
                }
            }
        }
        // The lanes in lockstep over the length of the shortest, then each to
        // its end.
        let shortest = (0..LANES).map(|k| bounds[k + 1] - bounds[k]).min().unwrap_or(0);
        let lane = |k: usize| &b[bounds[k]..bounds[k] + shortest];
        let [mut s0, mut s1, mut s2, mut s3] = states;
        let (l0, l1, l2, l3) = (lane(0), lane(1), lane(2), lane(3));
        // Match ends are written without a branch (a match state is met
        // every few words, too often for a branch to be predicted), a block
        // at a time: (offset in the block, lane, state) in one u32, the
        // count advanced by one where a lane met a match state.
        let mut found = [0u32; LANES * BLOCK];
        let mut block = 0;
        while block < shortest {
            let end = shortest.min(block + BLOCK);
            let mut n = 0;
            for j in block..end {
                s0 = step(s0, l0[j]);
                s1 = step(s1, l1[j]);
                s2 = step(s2, l2[j]);
                s3 = step(s3, l3[j]);
                let at = ((j - block) as u32) << OFFSET_SHIFT;
                for (k, s) in [s0, s1, s2, s3].into_iter().enumerate() {
                    found[n % (LANES * BLOCK)] = at | (k as u32) << LANE_SHIFT | s;
                    n += usize::from(s < matching);
                }
            }
            for &f in &found[..n] {
                let k = (f >> LANE_SHIFT & 3) as usize;
                ends[k].push((bounds[k] + block + (f >> OFFSET_SHIFT) as usize, f & STATE_MASK));
            }
            block = end;
        }
        states = [s0, s1, s2, s3];
        for k in 0..LANES {
            let from = bounds[k] + shortest;
            for (i, &byte) in b[from..bounds[k + 1]].iter().enumerate() {
                states[k] = step(states[k], byte);
                if states[k] < matching {
                    ends[k].push((from + i, states[k]));
                }
            }
        }
        ends
    }
}

/// Stretches of a text that [`Table::match_ends`] walks side by side.
pub(super) const LANES: usize = 4;

/// Bytes per lane between two reads of the match ends found.
const BLOCK: usize = 64;
/// A found match end: the state in the low bits (premultiplied, under
/// 2^20), the lane, then the offset in the block.
const STATE_MASK: u32 = (1 << 20) - 1;
const LANE_SHIFT: u32 = 20;
const OFFSET_SHIFT: u32 = 22;

#[cfg(test)]
mod tests {
    use super::*;

    /// The table walks exactly as the automaton: every state, every byte.
    #[test]
    fn the_table_is_the_automaton() {
        let table = &super::super::LITERALS.table;
        let index = |s: StateID| {
            table
                .states
                .iter()
                .position(|&t| t == s)
                .expect("a state of the table")
        };
        for (i, &s) in table.states.iter().enumerate() {
            for byte in 0..=255u8 {
                let here =
                    table.trans[i * table.width as usize + usize::from(table.columns[usize::from(byte)])];
                let there = index(table.dfa.next_state(Anchored::No, s, byte));
                assert_eq!(
                    here as usize,
                    there * table.width as usize,
                    "state {i}, byte {byte}"
                );
            }
            assert_eq!(table.dfa.is_match(s), (i as u32) * table.width < table.matching);
            assert_eq!(table.index(i as u32 * table.width), i);
            if table.dfa.is_match(s) {
                let ending: Vec<(u32, u32)> = (0..table.dfa.match_len(s))
                    .map(|k| table.dfa.match_pattern(s, k))
                    .map(|p| (p.as_u32(), table.dfa.pattern_len(p) as u32))
                    .collect();
                assert_eq!(table.ending(i as u32 * table.width), ending);
            }
        }
        assert_eq!(
            table.states[table.index(table.start)],
            table.dfa.start_state(Anchored::No).unwrap()
        );
    }
}
