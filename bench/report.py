#!/usr/bin/python3
# report.py: turn the raw runs of bench/run-bench.sh into one table per
# workload (median rate per stack, median of the per-repetition ratios vs
# bare) followed by the targets, each with what it is measured against and
# how (paired per-repetition ratios, or medians) and PASS/MISS, and a JSON
# results file.
#
# SPDX-License-Identifier: GPL-2.0-or-later

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import sys

BASE = 'bare'
MIB = 1 << 20

# Targets as (stack, versus, {unit: minimum ratio}, or None: informational),
# each the median of the per-repetition ratios stack/versus.
PAIR_TARGETS = [
    ('softdev-trace', 'bare', {'IOPS': 0.97, 'MiB/s': 0.98}),
    ('tap-c', 'softdev-trace', {'IOPS': 0.90, 'MiB/s': 0.95}),
    ('tap-xor', 'softdev-xor', {'IOPS': 0.80, 'MiB/s': 0.80}),
    ('tap-c-nopoll', 'softdev-trace', None),
    ('tap-py', 'softdev-trace', None),
]
# tap-c >= min(NBD_FACTOR x nbdkit, BARE_FACTOR x bare), from the medians:
# nbdkit does not run back to back with tap-c, nor with the same count.
NBD_STACK, NBD_FACTOR, BARE_FACTOR = 'nbdkit', 1.15, 0.95


def read_tsv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f, delimiter='\t'))


def rate(unit, nbytes, count, seconds):
    seconds = max(seconds, 1e-6)
    if unit == 'IOPS':
        return count / seconds
    return count * nbytes / MIB / seconds


def fmt_rate(unit, v):
    return f'{v:,.0f}' if unit == 'IOPS' else f'{v:,.1f}'


def report_target(t, want, workload, missed, detail):
    """Add t's verdict against the minimum ratio want (None: information),
    print its line, and note a miss."""
    verdict = 'info'
    if want:
        ok = t['ratio'] >= want
        t['min_ratio'] = want
        t['verdict'] = 'PASS' if ok else 'MISS'
        verdict = f'PASS (>= {want:.2f})' if ok else f'MISS (< {want:.2f})'
        if not ok:
            missed.append(f"{workload} {t['name']}")
    print(f"  {t['name']:<38} {t['ratio']:>7.3f} {detail:>12}  "
          f"{t['method']:<8} {verdict}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--workloads', required=True)
    ap.add_argument('--stacks', required=True)
    ap.add_argument('--commands', required=True)
    ap.add_argument('--runs', required=True)
    ap.add_argument('--json', required=True)
    ap.add_argument('--meta', action='append', default=[],
                    metavar='KEY=VALUE')
    args = ap.parse_args()

    meta = {}
    for kv in args.meta:
        k, _, v = kv.partition('=')
        meta[k] = int(v) if v.isdigit() else v

    workloads = read_tsv(args.workloads)
    stack_info = read_tsv(args.stacks)
    commands = read_tsv(args.commands)
    runs = read_tsv(args.runs)

    stacks = [st['stack'] for st in stack_info]
    paired = {st['stack']: st['paired_with'] for st in stack_info
              if st['paired_with']}

    results = {
        'date': datetime.datetime.now().astimezone().isoformat(
            timespec='seconds'),
        'host': {'cpus': os.cpu_count(), 'kernel': platform.release(),
                 'machine': platform.machine()},
        'config': meta,
        'stacks': stacks,
        'workloads': {},
    }
    missed = []
    all_ok = True

    cpu = meta.get('qemu_img_cpu', 'none')
    pinning = ('none' if cpu == 'none' else f"qemu-img on CPU {cpu}, the "
               f"servers on {meta.get('server_cpus')}")
    legend = ['Stacks, opened by qemu-img bench with default options; CPU '
              f'pinning: {pinning}:']
    legend += [f"  {st['stack']:<14} {st['description']}"
               for st in stack_info]
    legend += [
        'Figures:',
        '  median   IOPS (4 KiB) or MiB/s (1 MiB) of the stack, median of '
        'the repetitions',
        '  spread   (max - min) / median of the stack\'s rates',
        f'  ratio    against {BASE}: median of the per-repetition ratios '
        f'stack/{BASE}, with their min-max',
        f'  best     best run of the stack / best run of {BASE} '
        '(informational)',
        'Targets and information lines, each stack/versus:',
        '  paired       versus runs back to back with the stack, same '
        'request count, order',
        '               alternating; median of the per-repetition ratios',
        '  per-rep      both in every repetition, own request counts; '
        'median of the',
        '               per-repetition ratios',
        f'  medians      ratio of the medians ({NBD_STACK} runs apart from '
        'tap-c)',
        '  Verdicts: PASS/MISS against the minimum ratio, info: none.',
    ]
    results['legend'] = legend
    print()
    print('\n'.join(legend))
    for wl in workloads:
        name, unit = wl['workload'], wl['unit']
        nbytes = int(wl['bytes'])
        # rates[stack][rep]
        rates = {s: {} for s in stacks}
        for r in runs:
            if r['workload'] != name:
                continue
            rates[r['stack']][int(r['rep'])] = rate(
                unit, nbytes, int(r['count']), float(r['seconds']))
        reps = sorted(rates[BASE])
        wres = {'description': wl['description'], 'unit': unit,
                'request_bytes': nbytes, 'stacks': {}, 'targets': []}

        print()
        print(f"== {name}: {wl['description']}, {len(reps)} repetitions ==")
        print(f"  {'stack':<14} {'requests':>9} {'median ' + unit:>14} "
              f"{'spread':>7} {'ratio':>7} {'min-max':>12} {'best':>6}")
        for s in stacks:
            vals = [rates[s][i] for i in reps if i in rates[s]]
            if not vals:
                all_ok = False
                continue
            med = statistics.median(vals)
            cmd = next(c for c in commands
                       if c['workload'] == name and c['stack'] == s)
            entry = {'count': int(cmd['count']),
                     'median': round(med, 2),
                     'runs': [round(v, 2) for v in vals],
                     'command': cmd['command']}
            ratio_txt, spread_txt, best_txt = '1.000', '', ''
            if s != BASE:
                ratios = [rates[s][i] / rates[BASE][i] for i in reps
                          if i in rates[s] and rates[BASE][i] > 0]
                ratio = statistics.median(ratios)
                entry['ratio'] = round(ratio, 4)
                entry['ratio_runs'] = [round(x, 4) for x in ratios]
                entry['ratio_of_medians'] = round(
                    med / statistics.median(rates[BASE].values()), 4)
                # Interference only ever slows a run down: the ratio of
                # the best runs is a second, less noise-prone estimate.
                entry['ratio_of_best'] = round(
                    max(vals) / max(rates[BASE].values()), 4)
                ratio_txt = f'{ratio:.3f}'
                best_txt = f"{entry['ratio_of_best']:.3f}"
                spread_txt = f'{min(ratios):.3f}-{max(ratios):.3f}'
            # (max - min) / median of the rates, in per cent
            spread = 100 * (max(vals) - min(vals)) / med if med else 0.0
            entry['rate_spread_pct'] = round(spread, 1)
            wres['stacks'][s] = entry
            print(f"  {s:<14} {entry['count']:>9} {fmt_rate(unit, med):>14} "
                  f"{spread:>6.1f}% {ratio_txt:>7} {spread_txt:>12} "
                  f"{best_txt:>6}".rstrip())
        print(f"  {'stack/versus':<38} {'ratio':>7} {'min-max':>12}  "
              f"{'how':<8} verdict")
        for stack, versus, mins in PAIR_TARGETS:
            if stack not in rates or versus not in rates:
                continue
            ratios = [rates[stack][i] / rates[versus][i] for i in reps
                      if i in rates[stack] and rates[versus].get(i)]
            if not ratios:
                continue
            how = 'paired' if paired.get(stack) == versus else 'per-rep'
            t = {'name': f'{stack}/{versus}', 'stack': stack,
                 'versus': versus, 'method': how,
                 'ratio': round(statistics.median(ratios), 4),
                 'ratio_runs': [round(x, 4) for x in ratios]}
            report_target(t, mins and mins[unit], name, missed,
                          f'{min(ratios):.3f}-{max(ratios):.3f}')
            wres['targets'].append(t)
        if all(rates.get(x) for x in ('tap-c', NBD_STACK, BASE)):
            med = {x: statistics.median(rates[x].values())
                   for x in ('tap-c', NBD_STACK, BASE)}
            bounds = {
                f'{NBD_FACTOR} x {NBD_STACK}': NBD_FACTOR * med[NBD_STACK],
                f'{BARE_FACTOR} x {BASE}': BARE_FACTOR * med[BASE]}
            which = min(bounds, key=bounds.get)
            t = {'name': f'tap-c/min({NBD_FACTOR} x {NBD_STACK}, '
                         f'{BARE_FACTOR} x {BASE})',
                 'stack': 'tap-c', 'versus': which, 'method': 'medians',
                 'ratio': round(med['tap-c'] / bounds[which], 4),
                 f'ratio_to_{NBD_STACK}': round(
                     med['tap-c'] / med[NBD_STACK], 4),
                 f'ratio_to_{BASE}': round(med['tap-c'] / med[BASE], 4)}
            report_target(t, 1.0, name, missed, f'= {which}')
            wres['targets'].append(t)
        results['workloads'][name] = wres

    results['summary'] = {
        'targets_met': not missed,
        'missed': missed,
    }
    print()
    if missed:
        print(f"SUMMARY: MISSED: {', '.join(missed)}")
    else:
        print("SUMMARY: every target met (PASS)")

    with open(args.json, 'w') as f:
        json.dump(results, f, indent=2)
        f.write('\n')
    return 0 if all_ok else 1


if __name__ == '__main__':
    sys.exit(main())
