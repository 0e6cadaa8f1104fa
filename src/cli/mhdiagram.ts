// MH's state diagram as a run observed it: nodes are the seed's states, edges the transitions the
// run took, labelled with the operations and their counts; refused operations are dashed loops.
// Written as Graphviz DOT and rendered to SVG by Graphviz itself (@viz-js/viz: Graphviz compiled to
// WebAssembly, so no system package is needed), for holding against the seed's Refinement 3.

import { STATES } from '../check/mh.js';

/** DOT text for transitions "from|to|operation|outcome" -> count (mhTransitions' keys). */
export function statesDot(transitions: Record<string, number>, title: string): string {
  const id = (s: string): string => `"${s}"`;
  const edges = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const [key, n] of Object.entries(transitions)) {
    const [from, to, op, outcome] = key.split('|');
    seen.add(from).add(to);
    const k = `${from}|${to}|${outcome ? 'refused' : 'ok'}`;
    const l = edges.get(k) ?? [];
    l.push(`${op}${outcome ? ` ${outcome}` : ''} ×${n}`);
    edges.set(k, l);
  }
  const lines = [
    'digraph mh_states {',
    `  label=${JSON.stringify(title)}; labelloc=t; fontname="Helvetica"; rankdir=LR;`,
    '  node [shape=box, style="rounded", fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=10];',
    '  start [shape=point, width=0.15];',
    `  start -> ${id('Unmapped')};`,
  ];
  for (const s of STATES) lines.push(`  ${id(s)}${seen.has(s) ? '' : ' [style="rounded,dashed", fontcolor=gray50, color=gray50]'};`);
  for (const [k, labels] of edges) {
    const [from, to, kind] = k.split('|');
    const attrs = kind === 'refused' ? ', style=dashed, color=gray45, fontcolor=gray35' : '';
    lines.push(`  ${id(from)} -> ${id(to)} [label=${JSON.stringify(labels.join('\n'))}${attrs}];`);
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Renders DOT to SVG with Graphviz (WebAssembly). */
export async function renderSvg(dot: string): Promise<string> {
  const { instance } = await import('@viz-js/viz');
  const viz = await instance();
  return viz.renderString(dot, { format: 'svg', engine: 'dot' });
}
