// Plots for the benchmarks, drawn with Vega-Lite (compiled to Vega and rendered to SVG without a
// browser): a real plotting library, so axes, scales and legends are right without hand-drawing.

import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { ScaleResult } from './scale.js';
import type { KhalfResult } from './khalf.js';

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

/** SVG: the cost of a top-level kernel change and of a switch against the number of address spaces, one line per method. */
export async function khalfPlotSvg(r: KhalfResult): Promise<string> {
  const values = r.rows.flatMap((x) => [
    { spaces: x.spaces, method: x.method, what: 'add a top-level kernel entry (µs)', us: x.addUs },
    ...(x.removeUs === null ? [] : [{ spaces: x.spaces, method: x.method, what: 'remove it (µs)', us: x.removeUs }]),
    { spaces: x.spaces, method: x.method, what: 'switch after a change (µs)', us: x.switchUs },
  ]);
  const spec = vl.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'nrvm bench khalf: keeping the kernel half in sync (os5)', subtitle: [`${r.machine.cpu}, Node ${r.node}; medians`] },
    data: { values },
    facet: { column: { field: 'what', type: 'nominal', title: null } },
    spec: {
      width: 240,
      height: 220,
      mark: { type: 'line', point: true },
      encoding: {
        x: { field: 'spaces', type: 'quantitative', scale: { type: 'log' }, title: 'address spaces' },
        y: { field: 'us', type: 'quantitative', scale: { type: 'log' }, title: 'µs' },
        color: { field: 'method', type: 'nominal', title: 'method', legend: { orient: 'bottom' } },
      },
    },
    resolve: { scale: { y: 'independent' } },
  }).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  return view.toSVG();
}
