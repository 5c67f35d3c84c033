// The quickstart's entry point: `npm run demo`. The program itself is in ./quickstart.ts.
import { runQuickstart } from "./quickstart.ts"

await runQuickstart((line) => console.log(line))
