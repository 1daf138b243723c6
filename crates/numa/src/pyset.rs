//! CPython's `set` of small integers, reproduced down to its iteration order.
//!
//! Why: nova pins a guest's vCPUs to the host CPUs in the order in which CPython happens to
//! iterate sets of thread siblings (`list(s)[:threads]` in `_pack_instance_onto_cores`), and
//! that order is not sorted: `list({3, 19})` is `[19, 3]` when 3 was added first, and `[3, 19]`
//! after the set was copied element by element once more. The order is fully determined by the
//! values, the table size and the sequence of set operations nova performs (no hash
//! randomisation applies to ints and tuples of ints), so it can be computed; no crate models
//! CPython's open-addressing table, hence this module.
//!
//! What is modelled is CPython 3.8–3.13 `Objects/setobject.c` as far as sets of non-negative
//! ints (`hash(n) == n`) go: tables of 8 slots growing ×4 of the used count when three fifths
//! are filled, linear probing of 9 slots where the table allows, then perturbed probing
//! (`i = i*5 + 1 + (perturb >>= 5)`), deletions leaving dummies, and the different insertion
//! paths of `add`, `update` with a set (`set_merge`: one resize up front, slot-for-slot copy
//! into an empty table of the same size), `&` (iterates the smaller operand, the right one on a
//! tie) and `-` (copy-and-discard when the left operand is more than four times the right).
//! [`tuple_hash`] is CPython's xxHash-based tuple hash, for the set of sibling tuples nova
//! de-duplicates.

/// A CPython set of ints: table slots in memory order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PySet {
    table: Vec<Slot>,
    fill: usize,
    used: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Dummy,
    Key(u32),
}

const MINSIZE: usize = 8;
const LINEAR_PROBES: usize = 9;
const PERTURB_SHIFT: u32 = 5;

/// The probe sequence of `set_add_entry`/`set_insert_clean`/`set_lookkey` for `hash` in a
/// table of `mask + 1` slots: calls `visit(slot)` until it returns true.
fn probe(hash: u64, mask: usize, mut visit: impl FnMut(usize) -> bool) -> usize {
    let mut perturb = hash;
    let mut i = (hash as usize) & mask;
    loop {
        let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
        for j in 0..=probes {
            if visit(i + j) {
                return i + j;
            }
        }
        perturb >>= PERTURB_SHIFT;
        i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb as usize)) & mask;
    }
}

impl Default for PySet {
    fn default() -> Self {
        PySet::new()
    }
}

impl PySet {
    /// `set()`.
    pub fn new() -> PySet {
        PySet { table: vec![Slot::Empty; MINSIZE], fill: 0, used: 0 }
    }

    /// `set(iterable)` for a non-set iterable: each element added in turn.
    pub fn from_iter_adds(items: impl IntoIterator<Item = u32>) -> PySet {
        let mut s = PySet::new();
        for x in items {
            s.add(x);
        }
        s
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Iteration order (`list(s)`).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().filter_map(|s| if let Slot::Key(k) = s { Some(*k) } else { None })
    }

    pub fn to_vec(&self) -> Vec<u32> {
        self.iter().collect()
    }

    pub fn sorted(&self) -> std::collections::BTreeSet<u32> {
        self.iter().collect()
    }

    pub fn contains(&self, key: u32) -> bool {
        let mask = self.mask();
        let mut found = false;
        probe(key as u64, mask, |i| match self.table[i] {
            Slot::Empty => true,
            Slot::Key(k) if k == key => {
                found = true;
                true
            }
            _ => false,
        });
        found
    }

    /// `set_add_entry`: the first dummy on the probe path is reused (no resize then), else
    /// the empty slot that ends it.
    pub fn add(&mut self, key: u32) {
        let mask = self.mask();
        let table = &self.table;
        let mut freeslot = None;
        let mut present = false;
        let slot = probe(key as u64, mask, |i| match table[i] {
            Slot::Empty => true,
            Slot::Key(k) if k == key => {
                present = true;
                true
            }
            Slot::Key(_) => false,
            Slot::Dummy => {
                freeslot.get_or_insert(i);
                false
            }
        });
        if present {
            return;
        }
        if let Some(f) = freeslot {
            self.table[f] = Slot::Key(key);
            self.used += 1;
            return;
        }
        self.table[slot] = Slot::Key(key);
        self.fill += 1;
        self.used += 1;
        if self.fill * 5 >= mask * 3 {
            self.resize(if self.used > 50000 { self.used * 2 } else { self.used * 4 });
        }
    }

    /// `set_table_resize`: the smallest power-of-two table above `minused`, entries reinserted
    /// in old slot order by `set_insert_clean`, dummies dropped.
    fn resize(&mut self, minused: usize) {
        let mut size = MINSIZE;
        while size <= minused {
            size <<= 1;
        }
        let old = std::mem::replace(&mut self.table, vec![Slot::Empty; size]);
        for s in old {
            if let Slot::Key(k) = s {
                self.insert_clean(k);
            }
        }
        self.fill = self.used;
    }

    fn insert_clean(&mut self, key: u32) {
        let mask = self.mask();
        let table = &self.table;
        let slot = probe(key as u64, mask, |i| table[i] == Slot::Empty);
        self.table[slot] = Slot::Key(key);
    }

    /// `set_discard_entry`: the slot becomes a dummy.
    pub fn discard(&mut self, key: u32) -> bool {
        let mask = self.mask();
        let table = &self.table;
        let mut hit = None;
        probe(key as u64, mask, |i| match table[i] {
            Slot::Empty => true,
            Slot::Key(k) if k == key => {
                hit = Some(i);
                true
            }
            _ => false,
        });
        match hit {
            Some(i) => {
                self.table[i] = Slot::Dummy;
                self.used -= 1;
                true
            }
            None => false,
        }
    }

    /// `s.update(other)` / `s |= other` with a set: `set_merge`.
    pub fn merge(&mut self, other: &PySet) {
        if other.used == 0 {
            return;
        }
        if (self.fill + other.used) * 5 >= self.mask() * 3 {
            self.resize((self.used + other.used) * 2);
        }
        if self.fill == 0 && self.mask() == other.mask() && other.fill == other.used {
            self.table.clone_from(&other.table);
            self.fill = other.fill;
            self.used = other.used;
            return;
        }
        if self.fill == 0 {
            for k in other.iter() {
                self.insert_clean(k);
            }
            self.fill = other.used;
            self.used = other.used;
            return;
        }
        for k in other.iter() {
            self.add(k);
        }
    }

    /// `set(other)` / `other.copy()`: a merge into an empty set.
    pub fn copy(&self) -> PySet {
        let mut s = PySet::new();
        s.merge(self);
        s
    }

    /// `a & b`: iterates the smaller operand (`b` when the sizes are equal), adding the common
    /// elements to a new set.
    pub fn and(a: &PySet, b: &PySet) -> PySet {
        let (probe_in, iterate) = if b.len() > a.len() { (b, a) } else { (a, b) };
        PySet::from_iter_adds(iterate.iter().filter(|k| probe_in.contains(*k)).collect::<Vec<_>>())
    }

    /// `a - b`.
    pub fn sub(a: &PySet, b: &PySet) -> PySet {
        if (a.len() >> 2) > b.len() {
            let mut c = a.copy();
            for k in b.iter() {
                c.discard(k);
            }
            return c;
        }
        PySet::from_iter_adds(a.iter().filter(|k| !b.contains(*k)).collect::<Vec<_>>())
    }

    /// `a | b`: a copy of `a` with `b` merged in.
    pub fn or(a: &PySet, b: &PySet) -> PySet {
        let mut c = a.copy();
        c.merge(b);
        c
    }

    /// `a -= b` with a set `b`: discards `b`'s elements (or, when `b` is over eight times
    /// larger, those of `a & b`).
    pub fn sub_assign(&mut self, b: &PySet) {
        let keys: Vec<u32> = if (b.len() >> 3) > self.len() { PySet::and(self, b).to_vec() } else { b.to_vec() };
        for k in keys {
            self.discard(k);
        }
    }

    /// A value assigned to an oslo.versionedobjects set field (`fields.Set.coerce`): the
    /// elements are added one by one to a plain set, which is then merged into a new empty
    /// `CoercedSet`.
    pub fn coerced(&self) -> PySet {
        PySet::from_iter_adds(self.to_vec()).copy()
    }

    /// A set field through `obj_to_primitive` (a list in iteration order) and back through
    /// `from_primitive` (a set comprehension) and the field's coercion.
    pub fn json_round_trip(&self) -> PySet {
        PySet::from_iter_adds(self.to_vec()).coerced()
    }
}

impl serde::Serialize for PySet {
    /// As a sorted list: the iteration order is an implementation detail of the model.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.sorted())
    }
}

impl<'de> serde::Deserialize<'de> for PySet {
    /// From a list, added in list order (as nova's `from_primitive` does).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PySet::from_iter_adds(Vec::<u32>::deserialize(d)?))
    }
}

/// CPython's `hash(tuple)` (3.8+, 64-bit) for a tuple of non-negative ints.
pub fn tuple_hash(items: &[u32]) -> u64 {
    const P1: u64 = 11400714785074694791;
    const P2: u64 = 14029467366897019727;
    const P5: u64 = 2870177450012600261;
    let mut acc = P5;
    for &x in items {
        acc = acc.wrapping_add((x as u64).wrapping_mul(P2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(P1);
    }
    acc = acc.wrapping_add((items.len() as u64) ^ (P5 ^ 3527539));
    if acc == u64::MAX {
        1546275796
    } else {
        acc
    }
}

/// `set(t for t in tuples)` for tuples of ints, in iteration order: the de-duplication step of
/// the libvirt driver's sibling list.
pub fn set_of_tuples_order(tuples: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let mut table: Vec<Option<(u64, Vec<u32>)>> = vec![None; MINSIZE];
    let mut fill = 0;
    let insert = |table: &mut Vec<Option<(u64, Vec<u32>)>>, h: u64, t: Vec<u32>| {
        let mask = table.len() - 1;
        let slot = probe(h, mask, |i| match &table[i] {
            None => true,
            Some((hh, tt)) => *hh == h && *tt == t,
        });
        if table[slot].is_none() {
            table[slot] = Some((h, t));
            true
        } else {
            false
        }
    };
    for t in tuples {
        let h = tuple_hash(t);
        if insert(&mut table, h, t.clone()) {
            fill += 1;
            let mask = table.len() - 1;
            if fill * 5 >= mask * 3 {
                let mut size = MINSIZE;
                let minused = if fill > 50000 { fill * 2 } else { fill * 4 };
                while size <= minused {
                    size <<= 1;
                }
                let old = std::mem::replace(&mut table, vec![None; size]);
                for (h, t) in old.into_iter().flatten() {
                    insert(&mut table, h, t);
                }
            }
        }
    }
    table.into_iter().flatten().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected orders printed by CPython 3.11.7 for the same operations.
    #[test]
    fn orders_match_cpython() {
        let s = PySet::from_iter_adds([3, 19]);
        assert_eq!(s.to_vec(), vec![19, 3]);
        assert_eq!(PySet::from_iter_adds(s.to_vec()).to_vec(), vec![3, 19]);
        assert_eq!(PySet::from_iter_adds([0, 8, 16, 24]).to_vec(), vec![0, 8, 16, 24]);
        assert_eq!(PySet::from_iter_adds([0, 8, 16, 24, 32]).to_vec(), vec![0, 32, 8, 16, 24]);
        assert_eq!(tuple_hash(&[0, 16]) as i64, -1734320133510882234);
        // set(t for t in [(0, 16), (1, 17), (2, 18), (3, 19)])
        let tuples: Vec<Vec<u32>> = vec![vec![0, 16], vec![1, 17], vec![2, 18], vec![3, 19]];
        assert_eq!(set_of_tuples_order(&tuples), vec![vec![1, 17], vec![2, 18], vec![0, 16], vec![3, 19]]);
        let mut d = PySet::from_iter_adds([0, 8]);
        d.discard(0);
        d.add(16);
        assert_eq!(d.to_vec(), vec![16, 8], "a dummy on the probe path is reused");
        let a = PySet::from_iter_adds(1..=12);
        assert_eq!(PySet::sub(&a, &PySet::from_iter_adds([3])).to_vec(), vec![1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    /// Random programs of set operations run here and by the real CPython (when `python3` is
    /// on PATH; under CI=true it must be): every register's iteration order must agree.
    #[test]
    fn random_programs_match_cpython() {
        let Some(python) = ["python3", "python"].into_iter().find(|p| std::process::Command::new(p).arg("-c").arg("").status().is_ok_and(|s| s.success()))
        else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "python3 is required under CI=true");
            eprintln!("skipped pyset::random_programs_match_cpython: no python3 on PATH");
            return;
        };
        let mut seed: u64 = 0x5eed;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        const REGS: usize = 4;
        let mut program = String::new();
        let mut regs: Vec<PySet> = vec![PySet::new(); REGS];
        let mut expected = Vec::new();
        for _ in 0..300 {
            for _ in 0..40 {
                let (r, a) = (next(REGS as u64) as usize, next(REGS as u64) as usize);
                // `s & s` is a copy in CPython (identity check): only distinct operands here.
                let b = (a + 1 + next(REGS as u64 - 1) as usize) % REGS;
                let range = if next(2) == 0 { 20 } else { 200 };
                let x = next(range) as u32;
                let op = next(11);
                match op {
                    0 | 1 => regs[r].add(x),
                    2 => {
                        regs[r].discard(x);
                    }
                    3 => {
                        let o = if a == r { regs[a].copy() } else { regs[a].clone() };
                        regs[r].merge(&o)
                    }
                    4 => regs[r] = regs[a].copy(),
                    5 => regs[r] = PySet::and(&regs[a], &regs[b]),
                    6 => regs[r] = PySet::sub(&regs[a], &regs[b]),
                    7 => regs[r] = PySet::or(&regs[a], &regs[b]),
                    8 => {
                        let o = if a == r { regs[a].copy() } else { regs[a].clone() };
                        regs[r].sub_assign(&o)
                    }
                    9 => regs[r] = regs[a].coerced(),
                    _ => regs[r] = PySet::new(),
                }
                program += &format!("{op} {r} {a} {b} {x}\n");
            }
            program += "dump\n";
            expected.push(regs.iter().map(|s| format!("{:?}", s.to_vec())).collect::<Vec<_>>().join(" "));
        }
        let script = r#"
import sys
R = [set() for _ in range(4)]
def coerced(s):
    c = set()
    for e in s:
        c.add(e)
    n = set()
    n.update(c)
    return n
for line in sys.stdin:
    if line.startswith("dump"):
        print(" ".join(str(list(s)) for s in R))
        continue
    op, r, a, b, x = map(int, line.split())
    if op in (0, 1): R[r].add(x)
    elif op == 2: R[r].discard(x)
    elif op == 3: R[r] |= set(R[a]) if a == r else R[a]
    elif op == 4: R[r] = set(R[a])
    elif op == 5: R[r] = R[a] & R[b]
    elif op == 6: R[r] = R[a] - R[b]
    elif op == 7: R[r] = R[a] | R[b]
    elif op == 8:
        if a == r: R[r] -= R[a].copy()
        else: R[r] -= R[a]
    elif op == 9: R[r] = coerced(R[a])
    else: R[r] = set()
"#;
        let mut child =
            std::process::Command::new(python).args(["-c", script]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(program.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let got: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.replace(", ", ",")).collect();
        let want: Vec<String> = expected.iter().map(|l| l.replace(", ", ",")).collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "dump {i} differs (CPython left, emulation right)");
        }
        assert_eq!(got.len(), want.len());
    }
}
