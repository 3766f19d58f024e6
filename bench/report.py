#!/usr/bin/python3
# report.py: turn the raw runs of bench/run-bench.sh into one table per
# workload (median rate per stack, median of the paired per-repetition
# ratios vs bare, PASS/MISS for softdev-trace) and a JSON results file.
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
CHECKED = 'softdev-trace'       # the stack the per-workload target is for
MIB = 1 << 20

# Further targets: (stack, versus, {unit: minimum paired ratio})
PAIR_TARGETS = [
    ('tap-c', 'softdev-trace', {'IOPS': 0.90, 'MiB/s': 0.95}),
    ('tap-c', 'nbdkit', {'IOPS': 1.15, 'MiB/s': 1.15}),
    ('tap-py', 'softdev-trace', None),  # informational
]


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--workloads', required=True)
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
    commands = read_tsv(args.commands)
    runs = read_tsv(args.runs)

    stacks = []
    for c in commands:
        if c['stack'] not in stacks:
            stacks.append(c['stack'])

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

    print()
    print('median: of the repetitions; spread: (max - min) / median of the '
          'rates;')
    print(f'ratio: median of the per-repetition ratios stack/{BASE}, '
          'with their min-max;')
    print(f'best: best run of the stack / best run of {BASE} (informational); '
          f'verdicts use ratio')
    for wl in workloads:
        name, unit = wl['workload'], wl['unit']
        nbytes, target = int(wl['bytes']), float(wl['target'])
        # rates[stack][rep]
        rates = {s: {} for s in stacks}
        for r in runs:
            if r['workload'] != name:
                continue
            rates[r['stack']][int(r['rep'])] = rate(
                unit, nbytes, int(r['count']), float(r['seconds']))
        reps = sorted(rates[BASE])
        wres = {'description': wl['description'], 'unit': unit,
                'request_bytes': nbytes,
                'target': {'stack': CHECKED, 'min_ratio': target},
                'stacks': {}}

        print()
        print(f"== {name}: {wl['description']}, {len(reps)} repetitions ==")
        print(f"  {'stack':<14} {'requests':>9} {'median ' + unit:>14} "
              f"{'spread':>7} {'ratio':>7} {'min-max':>12} {'best':>6}  "
              f"verdict")
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
            ratio_txt, spread_txt, best_txt, verdict = '1.000', '', '', ''
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
                if s == CHECKED:
                    ok = ratio >= target
                    verdict = (f'PASS (>= {target:.2f})' if ok
                               else f'MISS (< {target:.2f})')
                    entry['verdict'] = 'PASS' if ok else 'MISS'
                    if not ok:
                        missed.append(name)
                else:
                    verdict = 'info'
            # (max - min) / median of the rates, in per cent
            spread = 100 * (max(vals) - min(vals)) / med if med else 0.0
            entry['rate_spread_pct'] = round(spread, 1)
            wres['stacks'][s] = entry
            print(f"  {s:<14} {entry['count']:>9} {fmt_rate(unit, med):>14} "
                  f"{spread:>6.1f}% {ratio_txt:>7} {spread_txt:>12} "
                  f"{best_txt:>6}  {verdict}".rstrip())
        for stack, versus, mins in PAIR_TARGETS:
            if stack not in rates or versus not in rates:
                continue
            ratios = [rates[stack][i] / rates[versus][i] for i in reps
                      if i in rates[stack] and rates[versus].get(i)]
            if not ratios:
                continue
            ratio = statistics.median(ratios)
            pair = {'ratio': round(ratio, 4),
                    'ratio_runs': [round(x, 4) for x in ratios]}
            verdict = 'info'
            if mins:
                want = mins[unit]
                ok = ratio >= want
                pair['min_ratio'] = want
                pair['verdict'] = 'PASS' if ok else 'MISS'
                verdict = (f'PASS (>= {want:.2f})' if ok
                           else f'MISS (< {want:.2f})')
                if not ok:
                    missed.append(f'{name} {stack}/{versus}')
            wres.setdefault('pairs', {})[f'{stack}/{versus}'] = pair
            print(f"  {stack + '/' + versus:<28} ratio {ratio:.3f} "
                  f"({min(ratios):.3f}-{max(ratios):.3f})  {verdict}")
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
