// nrvm as a library: `import { Machine, Simulator } from 'nrvm'`. The package's root exports
// what the README documents for programs — the machine (boot, run programs on cores, registers,
// translations, dumps), the seed's Simulator API, the stress runs and the race-script API —
// with their types. Everything else is reachable under nrvm/dist/src/... at the user's risk.

export { Machine, ConfigError, MachineError, type Job, type CoreTask } from './machine/machine.js';
export type { MachineOptions, MachineConfig } from './machine/config.js';
export type { CoreResult } from './machine/executor.js';
export { ProgramError, type Op, type ProgramSpec, type OpsProgram } from './machine/program.js';
export { Simulator, Pointer, DataType, ValueType, Value, seedExample, type ProcessState } from './machine/simulator.js';
export { writeDump, type DumpRoot } from './machine/dump.js';
export { runVmStress, DEFAULT_VM_MIX, type VmStressOptions, type VmStressReport } from './cli/vmstress.js';
export { runStress } from './cli/stress.js';
export { runCampaign, type CampaignOptions, type RunRecord } from './cli/campaign.js';
export { RaceApi, SCENARIOS_RACE, type RaceOutcome } from './workloads/races.js';
export { BREAKPOINTS } from './kernel/context.js';
