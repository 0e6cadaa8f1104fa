// Plots for the benchmarks, drawn with Vega-Lite (compiled to Vega and rendered to SVG without a
// browser): a real plotting library, so axes, scales and legends are right without hand-drawing.

import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { ScaleResult } from './scale.js';

/** An SVG line chart of operations per second against simulated cores, one line per mode. */
export async function scalePlotSvg(r: ScaleResult): Promise<string> {
  const values = r.rows.map((x) => ({ cores: x.cores, opsPerSec: x.opsPerSec, mode: x.mode === 'nr' ? 'node replication' : 'one copy + reader/writer lock' }));
  const spec = vl.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: `nrvm bench scale: ${r.workload}`,
      subtitle: [`${r.machine.cpu}, ${r.machine.cpus} real CPUs, Node ${r.node}`, `above ${r.machine.cpus} simulated cores the figures measure contention, not speed-up`],
    },
    width: 520,
    height: 300,
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'cores', type: 'quantitative', title: 'simulated cores', axis: { tickMinStep: 1 } },
      y: { field: 'opsPerSec', type: 'quantitative', title: 'operations per second (all cores)' },
      color: { field: 'mode', type: 'nominal', title: null, legend: { labelLimit: 300, orient: 'bottom' } },
    },
  }).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  return view.toSVG();
}
