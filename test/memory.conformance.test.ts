// The memory transport against the conformance suite: every case runs, in virtual time.
import { EventBus } from "@cqbus/core"
import { conformance } from "@cqbus/testkit"

conformance({
  name: "memory",
  layer: () => EventBus.layerMemory(),
  features: { retention: true, deadLetters: true, dedupe: true, wildcards: true, virtualTime: true },
  restart: "the memory transport lives inside the bus's process: there is no server to restart"
})
