"""Broad and property tests for spatial_dl.genome: edits vs a naive reference, providers, builder rules (mix, fallbacks,
holdouts), determinism over runs / DataLoader workers / ranks, FASTA tiling and the VCF reader, the CLI entry point."""
import gzip, hashlib, json, os, subprocess, sys, textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from spatial_dl.core import DistInfo, make_rng
from spatial_dl.genome import (
    BASES, DEFAULT_EDIT_SOURCE_COUNTS, DEFAULT_SOURCE_FALLBACKS, SOURCE_CLINVAR, SOURCE_GNOMAD_COMMON,
    SOURCE_SYNTHETIC_INDEL, SOURCE_SYNTHETIC_SNV, EditSourceCount, GenomeTupleDataset, HoldoutInterval, HoldoutPolicy,
    RelEdit, TrainingDatasetItem, TrainingTuple, Variant, WindowContext, apply_edits, build_training_tuples,
    check_edits, edit_key, encode_item, encode_sequence, fasta_windows, genome_main, normalize_sequence, parse_mix,
    read_bed, read_fasta, read_vcf, source_mix, synthetic_indel_provider, synthetic_snv_provider, tile_starts, variant_provider)

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SYN = {SOURCE_SYNTHETIC_SNV: synthetic_snv_provider, SOURCE_SYNTHETIC_INDEL: synthetic_indel_provider}


def rand_seq(n, *keys):
    return ''.join(make_rng(12345, *keys).choice(list(BASES), size=n))


def naive_apply(seq, edits):
    "Reference implementation: splice edits into a list from the rightmost to the leftmost."
    s = list(seq)
    for e in sorted(edits, key=lambda e: -e.pos):
        assert ''.join(s[e.pos:e.pos + len(e.ref)]) == e.ref
        s[e.pos:e.pos + len(e.ref)] = list(e.alt)
    return ''.join(s)


def snv_variants(chrom, seq, positions, shift=1, offset=0):
    "(chrom, 1-based pos, ref, alt) SNVs at 0-based `positions` of `seq` placed at `offset`."
    return [(chrom, offset + p + 1, seq[p], BASES[(BASES.index(seq[p]) + shift) % 4]) for p in positions]


# ---------------------------------------------------------------- strategies
dna = st.text(alphabet='ACGT', min_size=1, max_size=80)


@st.composite
def seq_and_edits(draw, max_edits=6):
    "A sequence and non-overlapping valid edits (SNV/MNV/ins/del/complex) on it."
    seq = draw(st.text(alphabet='ACGTN', min_size=1, max_size=60))
    edits, taken = [], set()
    for _ in range(draw(st.integers(0, max_edits))):
        pos = draw(st.integers(0, len(seq) - 1))
        rlen = draw(st.integers(1, min(4, len(seq) - pos)))
        span = set(range(pos, pos + rlen))
        if span & taken: continue
        ref = seq[pos:pos + rlen]
        alt = draw(st.text(alphabet='ACGTN', min_size=1, max_size=5).filter(lambda a: a != ref))
        edits.append(RelEdit(pos, ref, alt)); taken |= span
    return seq, edits


# ---------------------------------------------------------------- normalisation and types
def test_normalise_lowercase_and_iupac():
    assert normalize_sequence('acgtn') == 'ACGTN'
    assert normalize_sequence('RYKMSWBDHVrykmswbdhv') == 'N' * 20
    for bad in ['ACGU', 'AC GT', 'AC-T', 'A*', 'AC1', 'ACGT\n']:
        with pytest.raises(ValueError, match='is not DNA'): normalize_sequence(bad, name='x')
    with pytest.raises(TypeError, match='must be a str'): normalize_sequence(b'ACGT')


def test_window_context_normalises_and_refuses():
    w = WindowContext('r', 's', 'acgtY', start_bp=5, chrom='chr1', flank='gg')
    assert (w.sequence, w.flank, w.end_bp, w.window_id) == ('ACGTN', 'GG', 10, 'r:5-10')
    with pytest.raises(ValueError, match=r"window r:0: character 'X' at position 1"): WindowContext('r', 's', 'AXG')
    with pytest.raises(ValueError, match='record_id must be a non-empty str'): WindowContext('', 's', 'A')
    with pytest.raises(ValueError, match='start_bp must be an integer >= 0'): WindowContext('r', 's', 'A', start_bp=1.5)


def test_rel_edit_and_variant_validation():
    with pytest.raises(ValueError, match='pos must be an integer >= 0'): RelEdit(-1, 'A', 'G')
    with pytest.raises(ValueError, match='alt equals ref'): RelEdit(0, 'a', 'A')
    with pytest.raises(ValueError, match='not DNA'): RelEdit(0, 'A', '<DEL>')
    with pytest.raises(ValueError, match='1-based integer'): Variant('chr1', 0, 'A', 'G')
    assert RelEdit(4, 'AC', 'A').end == 6 and RelEdit(4, 'AC', 'A').delta == -1
    assert RelEdit(4, 'AC', 'GT').kind == 'mnv' and RelEdit(4, 'AC', 'T').kind == 'complex'


# ---------------------------------------------------------------- coordinates at window edges
def test_variant_provider_window_edges():
    ref = rand_seq(30, 1)
    w = WindowContext('chr1', 'reference', ref[10:20], start_bp=10, chrom='chr1')   # 1-based 11..20
    inside_first = ('chr1', 11, ref[10], 'N' if ref[10] != 'N' else 'A')
    inside_last = ('chr1', 20, ref[19], BASES[(BASES.index(ref[19]) + 1) % 4])
    before = ('chr1', 10, ref[9], BASES[(BASES.index(ref[9]) + 1) % 4])
    after = ('chr1', 21, ref[20], BASES[(BASES.index(ref[20]) + 1) % 4])
    straddle_left = ('chr1', 10, ref[9:11], ref[9])     # span [9, 11)
    straddle_right = ('chr1', 20, ref[19:21], ref[19])  # span [19, 21)
    whole = ('chr1', 11, ref[10:20], ref[10])           # exactly the window
    got = variant_provider([inside_first, inside_last, before, after, straddle_left, straddle_right, whole])(w, 0, None)
    assert sorted(e.key for e in got) == sorted([RelEdit(0, ref[10], inside_first[3]).key,
                                                 RelEdit(9, ref[19], inside_last[3]).key,
                                                 RelEdit(0, ref[10:20], ref[10]).key])
    for e in got:   # round trip: relative edit -> absolute key -> same variant
        assert edit_key(w, e) in {Variant(*v).key for v in (inside_first, inside_last, whole)}
    # another chromosome, or an unplaced window with the same record name: nothing
    assert variant_provider([('chr2', 11, ref[10], inside_first[3])])(w, 0, None) == ()
    assert variant_provider([inside_first])(WindowContext('chr1', 'reference', ref[10:20], 10), 0, None) == ()


@given(start=st.integers(0, 50), length=st.integers(1, 30), vstart=st.integers(0, 90), vlen=st.integers(1, 5))
@SETTINGS
def test_variant_in_window_iff_span_contained(start, length, vstart, vlen):
    ref = rand_seq(100, 2)
    w = WindowContext('chr1', 'reference', ref[start:start + length], start_bp=start, chrom='chr1')
    v = ('chr1', vstart + 1, ref[vstart:vstart + vlen], 'A' if ref[vstart:vstart + vlen] != 'A' else 'C')
    if len(v[2]) < vlen: return   # ran off the toy chromosome
    got = variant_provider([v])(w, 0, None)
    contained = start <= vstart and vstart + vlen <= start + length
    assert len(got) == int(contained)
    if contained: assert got[0].pos == vstart - start and edit_key(w, got[0]) == Variant(*v).key


def test_holdout_interval_edges():
    iv = HoldoutInterval('c', 10, 20)
    assert not iv.intersects('c', 0, 10) and iv.intersects('c', 0, 11)
    assert iv.intersects('c', 19, 25) and not iv.intersects('c', 20, 25)
    assert iv.intersects('c', 12, 13) and iv.intersects('c', 0, 100) and not iv.intersects(None, 12, 13)


# ---------------------------------------------------------------- applying edits
def test_hand_computed_targets():
    s = 'ACGTACGTAC'
    assert apply_edits(s, [RelEdit(0, 'A', 'C'), RelEdit(9, 'C', 'A')]) == 'CCGTACGTAA'
    assert apply_edits(s, [RelEdit(9, 'C', 'CGG')]) == 'ACGTACGTACGG'                     # insertion at the last base
    assert apply_edits(s, [RelEdit(7, 'TAC', 'T')]) == 'ACGTACGT'                        # deletion to the window end
    assert apply_edits(s, [RelEdit(0, 'ACG', 'A'), RelEdit(3, 'T', 'TTT')]) == 'ATTTACGTAC'
    assert apply_edits(s, [RelEdit(1, 'CG', 'GC')]) == 'AGCTACGTAC'
    # preserve_length: left-anchored; insertions push bases out on the right, deletions pull in the flank then N
    assert apply_edits(s, [RelEdit(0, 'A', 'AGG')], True) == 'AGGCGTACGT'
    assert apply_edits(s, [RelEdit(0, 'ACG', 'A')], True, flank='TTT') == 'ATACGTACTT'
    assert apply_edits(s, [RelEdit(0, 'ACG', 'A')], True, flank='') == 'ATACGTACNN'
    assert apply_edits(s, [RelEdit(0, 'ACG', 'A'), RelEdit(5, 'C', 'CAA')], True, flank='TTT') == 'ATACAAGTAC'  # net 0


@given(seq_and_edits(), st.text(alphabet='ACGT', max_size=6))
@SETTINGS
def test_apply_edits_matches_naive_reference(se, flank):
    seq, edits = se
    out = apply_edits(seq, list(reversed(edits)))
    assert out == naive_apply(seq, edits)
    assert len(out) == len(seq) + sum(e.delta for e in edits)
    kept = apply_edits(seq, edits, preserve_length=True, flank=flank)
    assert len(kept) == len(seq)
    expect = (out + flank + 'N' * len(seq))[:len(seq)]   # truncate, or refill from the flank then N
    assert kept == expect


@given(seq_and_edits(max_edits=3))
@SETTINGS
def test_bad_edits_are_refused(se):
    seq, edits = se
    with pytest.raises(ValueError, match='outside the window'):
        apply_edits(seq, [RelEdit(len(seq), 'A', 'C')])
    with pytest.raises(ValueError, match='outside the window'):
        apply_edits(seq, [RelEdit(len(seq) - 1, seq[-1] + 'A', 'G')])
    p = 0
    wrong = {'A': 'C', 'C': 'G', 'G': 'T', 'T': 'A', 'N': 'A'}[seq[p]]
    with pytest.raises(ValueError, match='has ref'):
        apply_edits(seq, [RelEdit(p, wrong, 'G' if wrong != 'G' else 'T')])
    if edits:
        e = edits[0]
        clash = RelEdit(e.pos, seq[e.pos], 'A' if seq[e.pos] != 'A' else 'C')
        with pytest.raises(ValueError, match='overlap'): apply_edits(seq, edits + [clash])


# ---------------------------------------------------------------- providers
@given(seq=st.text(alphabet='ACGTN', min_size=1, max_size=80), count=st.integers(0, 30), seed=st.integers(0, 2**32))
@SETTINGS
def test_synthetic_snv_provider_properties(seq, count, seed):
    w = WindowContext('r', 's', seq)
    edits = synthetic_snv_provider(w, count, make_rng(seed))
    assert len(edits) == min(count, len(seq) - seq.count('N'))
    assert len({e.pos for e in edits}) == len(edits)
    for e in edits:
        assert e.kind == 'snv' and e.ref == seq[e.pos] and e.ref != 'N' and e.alt in BASES and e.alt != e.ref
    assert edits == synthetic_snv_provider(w, count, make_rng(seed))


def test_synthetic_snv_is_roughly_uniform():
    w = WindowContext('r', 's', 'ACGT' * 5)
    rng = make_rng(3)
    pos, alts = Counter(), Counter()
    for _ in range(2000):
        for e in synthetic_snv_provider(w, 1, rng): pos[e.pos] += 1; alts[(e.ref, e.alt)] += 1
    assert len(pos) == 20 and min(pos.values()) > 60 and max(pos.values()) < 150   # expected 100 each
    assert len(alts) == 12 and min(alts.values()) > 100                             # expected ~167 each


@given(seq=st.text(alphabet='ACGTN', min_size=1, max_size=80), count=st.integers(0, 10), seed=st.integers(0, 2**32),
       max_len=st.integers(1, 5))
@SETTINGS
def test_synthetic_indel_provider_properties(seq, count, seed, max_len):
    w = WindowContext('r', 's', seq)
    edits = synthetic_indel_provider(w, count, make_rng(seed), max_len=max_len)
    assert len(edits) <= count
    check_edits(seq, edits)   # inside, ref matches, no overlap
    for e in edits:
        assert e.kind in ('ins', 'del') and 1 <= abs(e.delta) <= max_len and 'N' not in e.ref and 'N' not in e.alt


def test_synthetic_indel_fills_long_windows_and_mixes_kinds():
    w = WindowContext('r', 's', rand_seq(500, 3))
    kinds = Counter(e.kind for s in range(50) for e in synthetic_indel_provider(w, 4, make_rng(s)))
    assert sum(kinds.values()) == 200 and kinds['ins'] > 60 and kinds['del'] > 60


def test_variant_provider_ref_mismatch_names_variant():
    ref = rand_seq(20, 4)
    wrong = BASES[(BASES.index(ref[5]) + 1) % 4]
    w = WindowContext('chr1', 'reference', ref, chrom='chr1')
    with pytest.raises(ValueError, match=rf"variant chr1:6:{wrong}:N.*does not match the reference '{ref[5]}' in window chr1:0-20"):
        variant_provider([Variant('chr1', 6, wrong, 'N')])(w, 1, None)
    with pytest.raises(TypeError, match='variants must be Variant'):
        variant_provider([('chr1', 6)])


# ---------------------------------------------------------------- the builder: mix, fallbacks, holdouts
def placed_setup(n=200, dense=True):
    ref = rand_seq(n + 20, 5)
    w = WindowContext('chr1', 'reference', ref[:n], chrom='chr1', flank=ref[n:])
    gn = snv_variants('chr1', ref, range(0, n, 5 if dense else 97))
    cv = snv_variants('chr1', ref, range(2, n, 11 if dense else 150), shift=2)
    prov = {**SYN, SOURCE_GNOMAD_COMMON: variant_provider(gn), SOURCE_CLINVAR: variant_provider(cv)}
    return w, prov, gn, cv


def test_default_mix_counts_and_tuple_invariants():
    w, prov, gn, cv = placed_setup()
    tuples = build_training_tuples(w, prov, rng=make_rng(1))
    assert [(t.edit_source, t.requested_source, len(t.rel_edits)) for t in tuples] == \
           [(m.source, m.source, m.n) for m in DEFAULT_EDIT_SOURCE_COUNTS]
    assert source_mix(tuples) == Counter({SOURCE_GNOMAD_COMMON: 3, SOURCE_SYNTHETIC_SNV: 3, SOURCE_SYNTHETIC_INDEL: 1, SOURCE_CLINVAR: 1})
    gkeys, ckeys = {Variant(*v).key for v in gn}, {Variant(*v).key for v in cv}
    for t in tuples:
        assert (t.window_id, t.source_record_id, t.window_start_bp, t.window_end_bp, t.chrom) == ('chr1:0-200', 'chr1', 0, 200, 'chr1')
        assert list(t.rel_edits) == check_edits(w.sequence, t.rel_edits)   # sorted, inside, non-overlapping
        assert t.target_window == apply_edits(w.sequence, t.rel_edits, True, w.flank)
        assert len(t.target_window) == len(w.sequence)
    assert {edit_key(w, e) for e in tuples[0].rel_edits} <= gkeys
    assert {edit_key(w, e) for e in tuples[3].rel_edits} <= ckeys
    assert json.loads(json.dumps(tuples[2].to_dict()))['rel_edits'][0].keys() == {'pos', 'ref', 'alt'}


@given(mix=st.dictionaries(st.sampled_from([SOURCE_SYNTHETIC_SNV, SOURCE_SYNTHETIC_INDEL, SOURCE_GNOMAD_COMMON, SOURCE_CLINVAR]),
                           st.integers(0, 6)), seed=st.integers(0, 10**6), preserve=st.booleans())
@SETTINGS
def test_any_mix_gives_its_counts_and_valid_targets(mix, seed, preserve):
    w, prov, _, _ = placed_setup()
    tuples = build_training_tuples(w, prov, rng=seed, mix=mix, preserve_length=preserve)
    active = [(s, n) for s, n in mix.items() if n > 0]
    assert [(t.requested_source, len(t.rel_edits)) for t in tuples] == active
    for t in tuples:
        assert t.edit_source == t.requested_source   # dense variants: no fallback needed
        check_edits(w.sequence, t.rel_edits)
        full = naive_apply(w.sequence, t.rel_edits)
        assert t.target_window == ((full + w.flank + 'N' * 999)[:len(w.sequence)] if preserve else full)


def test_mix_bad_inputs():
    w, prov, _, _ = placed_setup()
    with pytest.raises(ValueError, match=r"mix source 'gnomad' has no provider; providers given: \['clinvar'"):
        build_training_tuples(w, prov, mix={'gnomad': 1})
    with pytest.raises(ValueError, match='n must be an integer >= 0, got -3'):
        build_training_tuples(w, prov, mix={SOURCE_SYNTHETIC_SNV: -3})
    with pytest.raises(ValueError, match='more than once'):
        build_training_tuples(w, prov, mix=[(SOURCE_SYNTHETIC_SNV, 1), (SOURCE_SYNTHETIC_SNV, 2)])
    with pytest.raises(ValueError, match='n must be an integer'): EditSourceCount('x', 1.5)
    with pytest.raises(ValueError, match='is not an integer'): parse_mix('a=two')
    with pytest.raises(TypeError, match='rng must be'): build_training_tuples(w, prov, rng='seed')
    assert build_training_tuples(w, prov, mix={SOURCE_SYNTHETIC_SNV: 0}) == ()


def test_fallbacks_only_where_configured():
    w, prov, _, _ = placed_setup(dense=False)   # 3 gnomAD variants (0, 97, 194), 2 ClinVar (2, 152)
    # enough data: no fallback even though one is configured
    t = build_training_tuples(w, prov, rng=0, mix={SOURCE_GNOMAD_COMMON: 3, SOURCE_CLINVAR: 2})
    assert [x.edit_source for x in t] == [SOURCE_GNOMAD_COMMON, SOURCE_CLINVAR]
    # asking for more than exists: the configured fallback takes the whole entry
    t = build_training_tuples(w, prov, rng=0, mix={SOURCE_GNOMAD_COMMON: 4, SOURCE_CLINVAR: 2})
    assert [(x.requested_source, x.edit_source, len(x.rel_edits)) for x in t] == \
           [(SOURCE_GNOMAD_COMMON, SOURCE_SYNTHETIC_SNV, 4), (SOURCE_CLINVAR, SOURCE_CLINVAR, 2)]
    # a custom fallback target is honoured
    t = build_training_tuples(w, prov, rng=0, mix={SOURCE_CLINVAR: 3}, fallback_sources={SOURCE_CLINVAR: SOURCE_GNOMAD_COMMON})
    assert t[0].edit_source == SOURCE_GNOMAD_COMMON
    # chains are followed
    t = build_training_tuples(w, prov, rng=0, mix={SOURCE_CLINVAR: 4},
                              fallback_sources={SOURCE_CLINVAR: SOURCE_GNOMAD_COMMON, SOURCE_GNOMAD_COMMON: SOURCE_SYNTHETIC_INDEL})
    assert t[0].edit_source == SOURCE_SYNTHETIC_INDEL and len(t[0].rel_edits) == 4
    # synthetic sources have no fallback by default
    assert SOURCE_SYNTHETIC_SNV not in DEFAULT_SOURCE_FALLBACKS and SOURCE_SYNTHETIC_INDEL not in DEFAULT_SOURCE_FALLBACKS


def test_missing_source_without_fallback_raises():
    w, prov, _, _ = placed_setup(dense=False)
    with pytest.raises(ValueError, match=r"source 'clinvar' could give only 2 of 3 usable edits for window chr1:0-200 and has no fallback"):
        build_training_tuples(w, prov, rng=0, mix={SOURCE_CLINVAR: 3}, fallback_sources={})
    with pytest.raises(ValueError, match="could give only 0 of 1"):   # unplaced window, fallbacks disabled
        build_training_tuples(WindowContext('contig', 's', w.sequence), prov, rng=0, mix={SOURCE_GNOMAD_COMMON: 1}, fallback_sources=None)
    with pytest.raises(ValueError, match="source 'synthetic_snv' could give only 4 of 5"):   # window with 4 ACGT bases
        build_training_tuples(WindowContext('r', 's', 'ANCNGNT'), SYN, rng=0, mix={SOURCE_SYNTHETIC_SNV: 5})
    # no provider for gnomAD: the default fallback must NOT turn it synthetic
    with pytest.raises(ValueError, match="mix source 'gnomad_common' has no provider"):
        build_training_tuples(w, SYN, rng=0)
    # a fallback target without a provider
    with pytest.raises(ValueError, match="fallback 'clinvar' for source 'gnomad_common' has no provider"):
        build_training_tuples(WindowContext('contig', 's', w.sequence), {**SYN, SOURCE_GNOMAD_COMMON: prov[SOURCE_GNOMAD_COMMON]},
                              rng=0, mix={SOURCE_GNOMAD_COMMON: 1}, fallback_sources={SOURCE_GNOMAD_COMMON: SOURCE_CLINVAR})


def test_provider_returning_bad_edits_is_an_error():
    w = WindowContext('r', 's', 'ACGTACGT')
    outside = {'bad': lambda win, n, rng: [RelEdit(7, 'TA', 'T')]}
    with pytest.raises(ValueError, match=r'bad edits for window r:0-8: edit 7:TA>T spans \[7, 9\), outside the window'):
        build_training_tuples(w, outside, mix={'bad': 1})
    mismatch = {'bad': lambda win, n, rng: [(0, 'C', 'G')]}
    with pytest.raises(ValueError, match="has ref 'C' but the window has 'A'"):
        build_training_tuples(w, mismatch, mix={'bad': 1})


def naive_excludes_window(p, w):
    if w.record_id in p.record_ids: return True
    if w.chrom is None: return False
    if w.chrom in p.holdout_chroms: return True
    return any(iv.chrom == w.chrom and iv.start_bp <= i < iv.end_bp for iv in p.intervals for i in range(w.start_bp, w.end_bp))


@given(chrom=st.sampled_from(['c1', 'c2', None]), rec=st.sampled_from(['r1', 'r2']), start=st.integers(0, 60),
       length=st.integers(1, 20), hold_chroms=st.lists(st.sampled_from(['c1', 'c2', 'c3']), max_size=2),
       ivs=st.lists(st.tuples(st.sampled_from(['c1', 'c2']), st.integers(0, 80), st.integers(1, 15)), max_size=3),
       recs=st.lists(st.sampled_from(['r1', 'r3']), max_size=2))
@SETTINGS
def test_each_holdout_kind_excludes_exactly_its_windows(chrom, rec, start, length, hold_chroms, ivs, recs):
    w = WindowContext(rec, 's', 'A' * length, start_bp=start, chrom=chrom)
    intervals = [HoldoutInterval(c, s, s + n) for c, s, n in ivs]
    for p in [HoldoutPolicy(holdout_chroms=hold_chroms), HoldoutPolicy(intervals=intervals), HoldoutPolicy(record_ids=recs),
              HoldoutPolicy(hold_chroms, intervals, (), recs)]:
        assert p.excludes_window(w) == naive_excludes_window(p, w)
    assert not HoldoutPolicy(edit_keys=[f'{chrom}:{start + 1}:A:C']).excludes_window(w)   # edit keys never drop windows


def test_holdouts_in_the_builder():
    w, prov, gn, cv = placed_setup()
    assert build_training_tuples(w, prov, holdouts=HoldoutPolicy(holdout_chroms=['chr1'])) == ()
    assert build_training_tuples(w, prov, holdouts=HoldoutPolicy(intervals=[HoldoutInterval('chr1', 199, 500)])) == ()
    assert build_training_tuples(w, prov, holdouts=HoldoutPolicy(record_ids=['chr1'])) == ()
    # holdouts on other chromosomes/records/intervals change nothing
    other = HoldoutPolicy(['chr2'], [HoldoutInterval('chr1', 200, 300), HoldoutInterval('chr2', 0, 200)], ['chr2:1:A:C'], ['chr2'])
    assert build_training_tuples(w, prov, rng=3, holdouts=other) == build_training_tuples(w, prov, rng=3)
    # held-out edit keys: every gnomAD variant but three -> exactly those three are chosen
    keys = [Variant(*v).key for v in gn]
    hold = HoldoutPolicy(edit_keys=keys[3:])
    t = build_training_tuples(w, prov, rng=3, mix={SOURCE_GNOMAD_COMMON: 3}, holdouts=hold)
    assert sorted(edit_key(w, e) for e in t[0].rel_edits) == sorted(keys[:3])
    # hold out all of them -> fallback to synthetic SNVs, none of which is held out
    hold = HoldoutPolicy(edit_keys=keys)
    for seed in range(20):
        t = build_training_tuples(w, prov, rng=seed, holdouts=hold)
        assert t[0].edit_source == SOURCE_SYNTHETIC_SNV
        assert not any(edit_key(w, e) in set(keys) for x in t for e in x.rel_edits)
    with pytest.raises(ValueError, match='could give only 0 of 3'):
        build_training_tuples(w, prov, rng=0, mix={SOURCE_GNOMAD_COMMON: 3}, holdouts=hold, fallback_sources={})


def test_holdout_policy_bad_inputs():
    with pytest.raises(TypeError, match='must be a collection, got the str'): HoldoutPolicy(holdout_chroms='chr1')
    with pytest.raises(TypeError, match='must hold HoldoutInterval'): HoldoutPolicy(intervals=[('chr1', 0, 5)])
    with pytest.raises(ValueError, match='need 0 <= start_bp < end_bp'): HoldoutInterval('c', -1, 5)


# ---------------------------------------------------------------- the dataset: determinism, workers, ranks
def dataset_windows(n=24, length=80):
    ref = rand_seq(n * length + 10, 6)
    wins = [WindowContext('chr1', 'reference', ref[i * length:(i + 1) * length], i * length, 'chr1',
                          ref[(i + 1) * length:(i + 1) * length + 10]) for i in range(n)]
    wins += [WindowContext(f'contig{i}', 'assembly', rand_seq(length, 7, i)) for i in range(4)]   # unplaced -> fallbacks
    gn = snv_variants('chr1', ref, range(0, n * length, 9))
    cv = snv_variants('chr1', ref, range(4, n * length // 2, 31), shift=3)
    return wins, {**SYN, SOURCE_GNOMAD_COMMON: variant_provider(gn), SOURCE_CLINVAR: variant_provider(cv)}


def stream_digest(items):
    return hashlib.sha256(json.dumps([[it.index, it.window_index, it.training_tuple.to_dict()] for it in items]).encode()).hexdigest()


def test_dataset_stream_is_deterministic_and_seed_dependent():
    wins, prov = dataset_windows()
    a = list(GenomeTupleDataset(wins, prov, seed=7))
    assert [it.index for it in a] == list(range(len(wins) * 4))
    assert a == list(GenomeTupleDataset(wins, prov, seed=7))
    assert a != list(GenomeTupleDataset(wins, prov, seed=8))
    ds = GenomeTupleDataset(wins, prov, seed=7); ds.set_epoch(1)
    assert list(ds) != a
    assert source_mix(it.training_tuple for it in a)[SOURCE_SYNTHETIC_SNV] > 3 * len(wins)   # fallbacks happened
    for w, it in GenomeTupleDataset(wins, prov, seed=7).iter_with_source_windows():
        assert it.training_tuple.window_id == w.window_id and it.sequence == w.sequence and wins[it.window_index] is w


def test_dataset_same_stream_in_a_fresh_process():
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_genome import dataset_windows, stream_digest
        from spatial_dl.genome import GenomeTupleDataset
        wins, prov = dataset_windows()
        print(stream_digest(GenomeTupleDataset(wins, prov, seed=7)))
    """)
    env = {**os.environ, 'PYTHONHASHSEED': '123'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, check=True).stdout.strip()
    wins, prov = dataset_windows()
    assert out == stream_digest(GenomeTupleDataset(wins, prov, seed=7))


def _identity(x): return x


@pytest.mark.parametrize('num_workers', [0, 1, 2])
def test_dataloader_order_independent_of_workers(num_workers):
    torch = pytest.importorskip('torch')
    from torch.utils.data import DataLoader, IterableDataset
    wins, prov = dataset_windows()
    ref = list(GenomeTupleDataset(wins, prov, seed=3))
    ds = GenomeTupleDataset(wins, prov, seed=3, rank=0, world_size=1)
    assert isinstance(ds, IterableDataset)
    got = list(DataLoader(ds, batch_size=None, num_workers=num_workers, collate_fn=_identity))
    assert got == ref
    # batched: block_size == batch_size gives identical batches
    enc = GenomeTupleDataset(wins, prov, seed=3, rank=0, world_size=1, block_size=5, transform=encode_item)
    batches = list(DataLoader(enc, batch_size=5, num_workers=num_workers))
    idx = torch.cat([b['index'] for b in batches]).tolist()
    assert idx == list(range(len(ref)))
    assert [len(b['index']) for b in batches] == [5] * (len(ref) // 5) + ([len(ref) % 5] if len(ref) % 5 else [])
    assert batches[0]['window'].shape == (5, 80) and batches[0]['edit_alt'].shape == (5, 8, 16)
    for b in batches:
        for i, j in enumerate(b['index'].tolist()):
            assert torch.equal(b['target'][i], torch.as_tensor(encode_sequence(ref[j].training_tuple.target_window)))


@pytest.mark.parametrize('world_size,block', [(2, 1), (3, 4)])
def test_ranks_partition_the_stream(world_size, block):
    torch = pytest.importorskip('torch')
    from torch.utils.data import DataLoader
    wins, prov = dataset_windows()
    ref = list(GenomeTupleDataset(wins, prov, seed=11))
    per_rank = []
    for r in range(world_size):
        info = DistInfo(rank=r, world_size=world_size)
        ds = GenomeTupleDataset(wins, prov, seed=11, rank=info.rank, world_size=info.world_size, block_size=block)
        a = list(ds)
        b = list(DataLoader(GenomeTupleDataset(wins, prov, seed=11, rank=r, world_size=world_size, block_size=block),
                            batch_size=None, num_workers=2, collate_fn=_identity)) if block == 1 else a
        assert a == b   # same share, in the same order, with 2 workers
        assert all((it.index // block) % world_size == r for it in a)
        per_rank.append(a)
    merged = sorted((it for share in per_rank for it in share), key=lambda it: it.index)
    assert merged == ref   # every item exactly once over the ranks


def test_rank_discovery_from_environment(monkeypatch):
    wins, prov = dataset_windows(n=4)
    monkeypatch.setenv('WORLD_SIZE', '2'); monkeypatch.setenv('RANK', '1')
    got = [it.index for it in GenomeTupleDataset(wins, prov, seed=0)]
    assert got and all(i % 2 == 1 for i in got)


def test_dataset_holdouts_and_bad_inputs():
    wins, prov = dataset_windows()
    hold = HoldoutPolicy(intervals=[HoldoutInterval('chr1', 100, 300)], record_ids=['contig1'])
    items = list(GenomeTupleDataset(wins, prov, seed=0, holdouts=hold))
    dropped = {wins[i].window_id for i in set(range(len(wins))) - {it.window_index for it in items}}
    assert dropped == {'chr1:80-160', 'chr1:160-240', 'chr1:240-320', 'contig1:0-80'}
    assert [it.index for it in items] == list(range(len(items)))
    with pytest.raises(TypeError, match='must be re-iterable'): GenomeTupleDataset(iter(wins), prov)
    with pytest.raises(ValueError, match="mix source 'gnomad_common' has no provider"): GenomeTupleDataset(wins, SYN)
    with pytest.raises(ValueError, match='block_size must be a positive integer'): GenomeTupleDataset(wins, prov, block_size=0)
    with pytest.raises(TypeError, match='expected WindowContext'): list(GenomeTupleDataset(['ACGT'], SYN, mix={SOURCE_SYNTHETIC_SNV: 1}))


def test_dataset_without_torch():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == 'torch' or name.startswith('torch.'): raise ImportError('torch blocked for this test')
        sys.meta_path.insert(0, Block())
        import spatial_dl.genome as g
        assert not g.HAS_TORCH and 'torch' not in sys.modules
        ws = [g.WindowContext(f'r{i}', 's', 'ACGTACGTAAGGCCTT') for i in range(5)]
        ds = g.GenomeTupleDataset(ws, {g.SOURCE_SYNTHETIC_SNV: g.synthetic_snv_provider}, mix='synthetic_snv=2', seed=1)
        items = list(ds)
        assert [it.index for it in items] == list(range(5)) and items == list(ds)
        print('ok', type(ds).__mro__[1].__name__)
    """)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['ok', '_IterableBase']


def test_encoding():
    assert encode_sequence('ACGTN').tolist() == [0, 1, 2, 3, 4]
    oh = encode_sequence('ACGTN', 'onehot', length=6)
    assert oh.shape == (6, 4) and oh.sum(1).tolist() == [1, 1, 1, 1, 0, 0] and oh[:4].argmax(1).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match='does not fit length=2'): encode_sequence('ACG', length=2)
    with pytest.raises(ValueError, match="kind must be"): encode_sequence('A', 'bits')
    t = TrainingTuple('w', 'r', 'x', (RelEdit(1, 'C', 'CGG'), RelEdit(3, 'TA', 'T')), 'ACGGGTC', 0, 6)
    item = TrainingDatasetItem(0, 0, 'ACGTAC', t)
    e = encode_item(item, max_edits=3, max_allele_len=4, target_len=8)
    assert e['edit_pos'].tolist() == [1, 3, 0] and e['edit_mask'].tolist() == [True, True, False]
    assert e['edit_alt'][0].tolist() == [1, 2, 2, 5] and e['edit_ref'][1].tolist() == [3, 0, 5, 5]
    assert e['target'].tolist() == [0, 1, 2, 2, 2, 3, 1, 5] and int(e['target_length']) == 7
    with pytest.raises(ValueError, match='exceed max_edits=1'): encode_item(item, max_edits=1)
    with pytest.raises(ValueError, match='target of length 7 exceeds target_len=6'): encode_item(item)
    with pytest.raises(ValueError, match='longer than max_allele_len=2'): encode_item(item, max_allele_len=2)


# ---------------------------------------------------------------- FASTA
def write_fasta(path, records, width=7, gz=False):
    text = ''.join(f">{name} description\n" + ''.join(seq[i:i + width] + '\n' for i in range(0, len(seq), width))
                   for name, seq in records)
    if gz:
        with gzip.open(path, 'wt') as f: f.write(text)
    else: Path(path).write_text(text)
    return path


def naive_tiles(seq, size, stride, min_gap, tail):
    "Reference tiling: find maximal segments by scanning base by base, then tile each."
    segs, i, n = [], 0, len(seq)
    cur = None
    while i < n:
        if seq[i] == 'N':
            j = i
            while j < n and seq[j] == 'N': j += 1
            if j - i >= min_gap:
                if cur is not None: segs.append((cur, i)); cur = None
                i = j; continue
            if cur is None: cur = i
            i = j; continue
        if cur is None: cur = i
        i += 1
    if cur is not None: segs.append((cur, n))
    out = []
    for s, e in segs:
        starts = [st_ for st_ in range(s, e) if (st_ - s) % stride == 0 and st_ + size <= e]
        if tail == 'align_end' and e - s >= size and (not starts or starts[-1] + size != e): starts.append(e - size)
        out += starts
    return out


@given(seq=st.text(alphabet='ACGTN', min_size=1, max_size=70), size=st.integers(1, 12), stride=st.integers(1, 12),
       min_gap=st.integers(1, 3), tail=st.sampled_from(['drop', 'align_end']), flank=st.integers(0, 4))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fasta_tiling_matches_naive(tmp_path, seq, size, stride, min_gap, tail, flank):
    fa = write_fasta(tmp_path / 'p.fa', [('c1', seq), ('c2', seq[::-1])])
    got = list(fasta_windows(fa, size, stride, min_n_gap=min_gap, tail=tail, flank_bp=flank))
    want = [(name, s) for name, sq in [('c1', seq), ('c2', seq[::-1])] for s in naive_tiles(sq, size, stride, min_gap, tail)]
    assert [(w.chrom, w.start_bp) for w in got] == want
    recs = {'c1': seq, 'c2': seq[::-1]}
    for w in got:
        assert w.sequence == recs[w.chrom][w.start_bp:w.start_bp + size] and len(w.sequence) == size
        assert w.flank == recs[w.chrom][w.end_bp:w.end_bp + flank]
        if min_gap == 1: assert 'N' not in w.sequence


def test_fasta_tiling_at_contig_ends(tmp_path):
    fa = write_fasta(tmp_path / 'e.fa', [('a', 'ACGTACGTAC'), ('b', 'ACG'), ('c', 'ACGTAC')])
    ids = lambda **kw: [w.window_id for w in fasta_windows(fa, 4, **kw)]
    assert ids() == ['a:0-4', 'a:4-8', 'c:0-4']                       # tails dropped, 'b' too short
    assert ids(tail='align_end') == ['a:0-4', 'a:4-8', 'a:6-10', 'c:0-4', 'c:2-6']
    assert ids(stride=2) == ['a:0-4', 'a:2-6', 'a:4-8', 'a:6-10', 'c:0-4', 'c:2-6']   # last window ends at contig end
    assert ids(stride=2, tail='align_end') == ids(stride=2)          # no duplicate when the tiling already reaches the end
    last = list(fasta_windows(fa, 4, stride=2, flank_bp=3))
    assert [w.flank for w in last if w.record_id == 'a'] == ['ACG', 'GTA', 'AC', '']
    assert [w.window_id for w in fasta_windows(fa, 4, contigs=['c'], placed=False)] == ['c:0-4']
    assert all(w.chrom is None for w in fasta_windows(fa, 4, placed=False))


def test_fasta_gzip_equals_plain_and_matches_biopython(tmp_path):
    from Bio import SeqIO
    recs = [('chr1', rand_seq(53, 8).lower()), ('chr2', 'NNNN' + rand_seq(20, 9)), ('chrM', 'ACGRYT')]
    plain = write_fasta(tmp_path / 'x.fa', recs)
    gz = write_fasta(tmp_path / 'x.fa.gz', recs, gz=True)
    a, b = list(read_fasta(plain)), list(read_fasta(gz))
    assert a == b
    with gzip.open(gz, 'rt') as f: bio = [(r.id, normalize_sequence(str(r.seq))) for r in SeqIO.parse(f, 'fasta')]
    assert a == bio and a[0][1] == recs[0][1].upper() and a[2][1] == 'ACGNNT'
    assert [w.window_id for w in fasta_windows(gz, 10)] == [w.window_id for w in fasta_windows(plain, 10)]


def test_fasta_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such file'): list(read_fasta(tmp_path / 'missing.fa'))
    bad = tmp_path / 'bad.fa'; bad.write_text('>c1\nACGT\nAC-T\nACGT\n')
    with pytest.raises(ValueError, match=r"bad.fa record c1: character '-' at position 6"): list(read_fasta(bad))
    nohead = tmp_path / 'nohead.fa.gz'
    with gzip.open(nohead, 'wt') as f: f.write('ACGT\n')
    with pytest.raises(ValueError, match="sequence before the first '>' header"): list(read_fasta(nohead))
    dup = tmp_path / 'dup.fa.gz'
    with gzip.open(dup, 'wt') as f: f.write('>a\nAC\n>a\nGT\n')
    with pytest.raises(ValueError, match="duplicate FASTA record 'a'"): list(read_fasta(dup))
    ok = write_fasta(tmp_path / 'ok.fa', [('a', 'ACGT')])
    with pytest.raises(ValueError, match='size must be a positive integer'): list(fasta_windows(ok, 0))
    with pytest.raises(ValueError, match="tail must be 'drop' or 'align_end'"): list(fasta_windows(ok, 2, tail='pad'))


def test_tile_starts_examples():
    assert tile_starts(0, 10, 4, 4) == [0, 4]
    assert tile_starts(0, 10, 4, 4, 'align_end') == [0, 4, 6]
    assert tile_starts(5, 8, 4, 1, 'align_end') == []


# ---------------------------------------------------------------- VCF
HEADER = '##fileformat=VCFv4.2\n##contig=<ID=chr1>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n'


def write_vcf(path, body, gz=False, header=HEADER):
    text = header + body
    if gz:
        with gzip.open(path, 'wt') as f: f.write(text)
    else: Path(path).write_text(text)
    return path


def test_vcf_reader_plain_and_gzip(tmp_path):
    body = ('chr1\t3\trs1\tG\tA\t50\tPASS\tAF=0.3\n'
            'chr1\t10\t.\tacg\ta,ACGT,<DEL>,*\t.\tPASS\tAF=0.1,0.2,0.3,0.4\n'
            'chr1\t20\t.\tC\t.\t.\tPASS\t.\n'
            'chr2\t5\t.\tT\tC\t.\tLowQual\tAF=0.9\n'
            'chr2\t8\tbnd\tT\tT[chr1:5[\t.\tPASS\tAF=0.9\n')
    for gz in (False, True):
        p = write_vcf(tmp_path / ('v.vcf.gz' if gz else 'v.vcf'), body, gz=gz)
        vs = read_vcf(p)
        assert [v.key for v in vs] == ['chr1:3:G:A', 'chr1:10:ACG:A', 'chr1:10:ACG:ACGT', 'chr2:5:T:C']
        assert vs[0].id == 'rs1' and vs[1].id is None and vs[3].line == 7
        assert [v.key for v in read_vcf(p, pass_only=True)] == ['chr1:3:G:A', 'chr1:10:ACG:A', 'chr1:10:ACG:ACGT']
        assert [v.key for v in read_vcf(p, min_af=0.2, chroms=['chr1'])] == ['chr1:3:G:A', 'chr1:10:ACG:ACGT']


@pytest.mark.parametrize('body,header,message', [
    ('chr1\t3\t.\tG\tA\t.\tPASS\n', HEADER, 'expected at least 8 tab-separated columns, found 7'),
    ('chr1\tx\t.\tG\tA\t.\tPASS\t.\n', HEADER, "POS 'x' is not an integer"),
    ('chr1\t0\t.\tG\tA\t.\tPASS\t.\n', HEADER, 'POS must be >= 1, found 0'),
    ('chr1\t3\t.\tG\tG\t.\tPASS\t.\n', HEADER, "ALT 'G' equals REF"),
    ('chr1\t3\t.\t<INS>\tA\t.\tPASS\t.\n', HEADER, 'symbolic or missing REF is not supported'),
    ('chr1\t3\t.\tG\tAXA\t.\tPASS\t.\n', HEADER, "ALT: character 'X' at position 1"),
    ('chr1\t3\t.\tG\tA\t.\tPASS\t.\n', '', 'data line before the #CHROM header'),
    ('', '##fileformat=VCFv4.2\n', 'no #CHROM header line'),
    ('chr1\t3\t.\tG\tA\t.\tPASS\t.\n', '#CHROM POS ID REF ALT\n', 'header must start #CHROM POS ID REF ALT'),
])
def test_vcf_bad_lines(tmp_path, body, header, message):
    p = write_vcf(tmp_path / 'b.vcf', body, header=header)
    with pytest.raises(ValueError, match=message) as ex: read_vcf(p)
    assert 'b.vcf' in str(ex.value)


def test_vcf_min_af_needs_af(tmp_path):
    p = write_vcf(tmp_path / 'n.vcf', 'chr1\t3\t.\tG\tA,C\t.\tPASS\tAF=0.5\n')
    with pytest.raises(ValueError, match=r'n.vcf:4: min_af needs one INFO AF value per ALT allele \(2\)'): read_vcf(p, min_af=0.1)


def test_vcf_overlapping_records(tmp_path):
    body = ('chr1\t10\t.\tACGT\tA\t.\tPASS\t.\n'   # span [9, 13)
            'chr1\t14\t.\tA\tG\t.\tPASS\t.\n'      # [13, 14): adjacent, fine
            'chr2\t12\t.\tA\tG,C\t.\tPASS\t.\n'    # multi-allelic: one record, fine
            'chr1\t13\t.\tT\tC\t.\tPASS\t.\n')     # [12, 13): inside the deletion
    p = write_vcf(tmp_path / 'o.vcf', body)
    with pytest.raises(ValueError, match=r'o.vcf: VCF records at lines 4 and 7 overlap on chr1'): read_vcf(p)
    assert len(read_vcf(p, allow_overlaps=True)) == 5
    ok = write_vcf(tmp_path / 'ok.vcf', body.rsplit('chr1\t13', 1)[0])
    assert len(read_vcf(ok)) == 4
    # a long deletion hidden behind a shorter record starting earlier is still caught
    p2 = write_vcf(tmp_path / 'o2.vcf', 'chr1\t1\t.\tACGTACGT\tA\t.\t.\t.\nchr1\t2\t.\tC\tG\t.\t.\t.\nchr1\t7\t.\tC\tG\t.\t.\t.\n')
    with pytest.raises(ValueError, match='lines 4 and 5 overlap'): read_vcf(p2)


def test_vcf_ref_mismatch_in_windows(tmp_path):
    ref = rand_seq(40, 10)
    fa = write_fasta(tmp_path / 'r.fa', [('chr1', ref)])
    good = write_vcf(tmp_path / 'g.vcf', ''.join(f"chr1\t{p + 1}\t.\t{ref[p]}\t{'A' if ref[p] != 'A' else 'C'}\t.\t.\t.\n" for p in (3, 25)))
    wins = list(fasta_windows(fa, 20))
    prov = variant_provider(read_vcf(good))
    assert [len(prov(w, 0, None)) for w in wins] == [1, 1]
    wrong = 'A' if ref[25] != 'A' else 'C'
    bad = write_vcf(tmp_path / 'x.vcf', f"chr1\t26\tv9\t{wrong}\tT\t.\t.\t.\n" if wrong != 'T' else f"chr1\t26\tv9\t{wrong}\tG\t.\t.\t.\n")
    prov = variant_provider(read_vcf(bad))
    assert prov(wins[0], 0, None) == ()
    with pytest.raises(ValueError, match=rf"variant chr1:26:{wrong}:[GT] \(line 4\): REF '{wrong}' does not match the reference '{ref[25]}' in window chr1:20-40"):
        prov(wins[1], 0, None)
    with pytest.raises(ValueError, match='does not match the reference'):
        build_training_tuples(wins[1], {**SYN, SOURCE_CLINVAR: prov}, mix={SOURCE_CLINVAR: 1})


# ---------------------------------------------------------------- command line
def test_genome_main_end_to_end(tmp_path, capsys):
    ref = rand_seq(1000, 11)
    fa = write_fasta(tmp_path / 'g.fa.gz', [('chr1', ref), ('chr2', rand_seq(300, 12))], gz=True)
    gn = write_vcf(tmp_path / 'gn.vcf.gz', ''.join(f"chr1\t{p + 1}\t.\t{ref[p]}\t{'A' if ref[p] != 'A' else 'G'}\t.\tPASS\tAF=0.2\n"
                                                  for p in range(0, 1000, 13)), gz=True)
    cv = write_vcf(tmp_path / 'cv.vcf', ''.join(f"chr1\t{p + 1}\t.\t{ref[p]}\t{'C' if ref[p] != 'C' else 'T'}\t.\tPASS\t.\n"
                                               for p in range(5, 1000, 97)))
    out = tmp_path / 'o' / 't.jsonl'
    args = [str(fa), '--out', str(out), '--gnomad', str(gn), '--clinvar', str(cv), '--window', '100', '--seed', '4']
    assert genome_main(args) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 13 * 4 and 'wrote 52 tuples' in capsys.readouterr().out
    by = Counter((r['chrom'], r['requested_source'], r['edit_source']) for r in rows)
    assert by[('chr1', 'gnomad_common', 'gnomad_common')] == 10 and by[('chr2', 'gnomad_common', 'synthetic_snv')] == 3
    for r in rows:
        edits = [RelEdit(**e) for e in r['rel_edits']]
        assert r['window'] == (ref if r['chrom'] == 'chr1' else rand_seq(300, 12))[r['window_start_bp']:r['window_end_bp']]
        assert len(r['target_window']) == 100 and naive_apply(r['window'], edits)[:90] == r['target_window'][:90]
    first = out.read_bytes()
    assert genome_main(args) == 0 and out.read_bytes() == first   # deterministic
    # holdouts and limits
    assert genome_main(args + ['--holdout-chrom', 'chr2', '--max-windows', '5', '--out', str(tmp_path / 'h.jsonl')]) == 0
    rows = [json.loads(l) for l in (tmp_path / 'h.jsonl').read_text().splitlines()]
    assert len(rows) == 20 and {r['chrom'] for r in rows} == {'chr1'}


def test_genome_main_errors_leave_no_file(tmp_path, capsys):
    fa = write_fasta(tmp_path / 'g.fa', [('chr1', rand_seq(300, 13))])
    out = tmp_path / 't.jsonl'
    assert genome_main([str(fa), '--out', str(out), '--window', '100']) == 1
    assert "--mix names ['gnomad_common', 'clinvar'] but no variant file" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob('.t.jsonl*'))
    assert genome_main([str(fa), '--out', str(out), '--window', '100', '--mix', 'synthetic_snv=200']) == 1
    assert "could give only 100 of 200" in capsys.readouterr().err and not out.exists()
    assert genome_main([str(tmp_path / 'nope.fa'), '--out', str(out), '--mix', 'synthetic_snv=1']) == 1
    assert 'no such file' in capsys.readouterr().err
    with pytest.raises(SystemExit): genome_main([str(fa)])   # --out is required


def test_fasta_irregular_lines_and_read_only_dir(tmp_path):
    irregular = tmp_path / 'irr.fa'
    irregular.write_text('>a\nACG\nTACGTA\nC\n>b\nGG\nGGGG\n')   # not indexable by pyfaidx: streamed instead
    assert list(read_fasta(irregular)) == [('a', 'ACGTACGTAC'), ('b', 'GGGGGG')]
    ro = tmp_path / 'ro'; ro.mkdir()
    write_fasta(ro / 'r.fa', [('a', 'ACGTACGTAC')])
    os.chmod(ro, 0o555)
    try:
        assert list(read_fasta(ro / 'r.fa')) == [('a', 'ACGTACGTAC')]
    finally: os.chmod(ro, 0o755)


def test_dataset_and_providers_pickle(tmp_path):
    "Spawned DataLoader workers (macOS/Windows default) need a picklable dataset: providers, windows callable, policy."
    import functools, pickle
    ref = rand_seq(400, 14)
    fa = write_fasta(tmp_path / 'p.fa', [('chr1', ref)])
    prov = {**SYN, SOURCE_GNOMAD_COMMON: variant_provider(snv_variants('chr1', ref, range(0, 400, 6))),
            SOURCE_CLINVAR: variant_provider(snv_variants('chr1', ref, range(1, 400, 17), shift=2))}
    ds = GenomeTupleDataset(functools.partial(fasta_windows, fa, 50), prov, seed=2,
                            holdouts=HoldoutPolicy(intervals=[HoldoutInterval('chr1', 0, 10)]), rank=0, world_size=1)
    clone = pickle.loads(pickle.dumps(ds))
    a = list(ds)
    assert a and list(clone) == a and a[0].window_index == 1
    assert repr(prov[SOURCE_GNOMAD_COMMON]) == 'VariantProvider(67 variants on 1 chromosomes)'


@pytest.mark.parametrize('world_size,block', [(2, 3), (3, 1), (4, 5)])
def test_drop_last_gives_equal_shares(world_size, block):
    wins, prov = dataset_windows()
    hold = HoldoutPolicy(record_ids=['contig2'])
    ref = list(GenomeTupleDataset(wins, prov, seed=5, holdouts=hold))
    assert GenomeTupleDataset(wins, prov, holdouts=hold).num_items() == len(ref) == (len(wins) - 1) * 4
    shares = [list(GenomeTupleDataset(wins, prov, seed=5, holdouts=hold, rank=r, world_size=world_size, block_size=block,
                                      drop_last=True)) for r in range(world_size)]
    limit = (len(ref) // (block * world_size)) * block * world_size
    assert {len(s) for s in shares} == {limit // world_size}
    assert sorted((it for s in shares for it in s), key=lambda it: it.index) == ref[:limit]


def test_refilled_deletions_never_reveal_held_out_bases():
    ref = rand_seq(60, 15)
    w = WindowContext('chr1', 'reference', ref[:20], chrom='chr1', flank=ref[20:30])
    dele = {'del': lambda win, n, rng: [RelEdit(2, win.sequence[2:8], win.sequence[2])]}   # net -5
    free = build_training_tuples(w, dele, mix={'del': 1})[0].target_window
    assert free == (ref[:3] + ref[8:20] + ref[20:25])
    hold = HoldoutPolicy(intervals=[HoldoutInterval('chr1', 23, 40)])
    assert not hold.excludes_window(w) and hold.usable_flank(w) == ref[20:23]
    held = build_training_tuples(w, dele, mix={'del': 1}, holdouts=hold)[0].target_window
    assert held == ref[:3] + ref[8:20] + ref[20:23] + 'NN'
    far = HoldoutPolicy(intervals=[HoldoutInterval('chr1', 30, 40), HoldoutInterval('chr2', 0, 99)])
    assert far.usable_flank(w) == w.flank


def test_read_bed(tmp_path):
    p = tmp_path / 'h.bed.gz'
    with gzip.open(p, 'wt') as f: f.write('# comment\nbrowser position chr1\nchr1\t0\t10\tx\t0\t+\n\nchr3\t5\t6\n')
    assert read_bed(p) == (HoldoutInterval('chr1', 0, 10), HoldoutInterval('chr3', 5, 6))
    bad = tmp_path / 'b.bed'
    bad.write_text('chr1 0 10\n')
    with pytest.raises(ValueError, match=r'b.bed:1: expected at least 3 tab-separated columns'): read_bed(bad)
    bad.write_text('chr1\t0\t1e3\n')
    with pytest.raises(ValueError, match=r"b.bed:1: start/end '0'/'1e3' are not integers"): read_bed(bad)


def test_genome_main_holdouts_from_files(tmp_path):
    ref = rand_seq(400, 16)
    fa = write_fasta(tmp_path / 'g.fa', [('chr1', ref)])
    gn_rows = [(p, ref[p], 'A' if ref[p] != 'A' else 'G') for p in range(0, 400, 7)]
    gn = write_vcf(tmp_path / 'gn.vcf', ''.join(f"chr1\t{p + 1}\t.\t{r}\t{a}\t.\tPASS\t.\n" for p, r, a in gn_rows))
    held = write_vcf(tmp_path / 'held.vcf', ''.join(f"chr1\t{p + 1}\t.\t{r}\t{a}\t.\tPASS\t.\n" for p, r, a in gn_rows[::2]))
    bed = tmp_path / 'h.bed'; bed.write_text('chr1\t150\t160\n')
    out = tmp_path / 'o.jsonl'
    assert genome_main([str(fa), '--out', str(out), '--gnomad', str(gn), '--window', '50', '--mix', 'gnomad_common=3',
                        '--holdout-bed', str(bed), '--holdout-vcf', str(held), '--no-fallbacks']) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r['window_start_bp'] for r in rows] == [0, 50, 100, 200, 250, 300, 350]   # 150-200 touches the BED region
    held_keys = {f"chr1:{p + 1}:{r}:{a}" for p, r, a in gn_rows[::2]}
    used = {f"chr1:{r['window_start_bp'] + e['pos'] + 1}:{e['ref']}:{e['alt']}" for r in rows for e in r['rel_edits']}
    assert used and not used & held_keys and all(r['edit_source'] == 'gnomad_common' for r in rows)
