// The seed's plugin in AssemblyScript: adds "x-my-header: Hello from WASM!"
// to every request. The plugin configuration, when set, replaces the
// header value.
export {
  proxy_abi_version_0_2_1, proxy_on_memory_allocate, proxy_on_context_create, proxy_on_vm_start,
  proxy_on_configure, proxy_on_request_headers, proxy_on_response_headers, proxy_on_done, proxy_on_delete,
} from "./proxy_wasm";
import { Action, Plugin, addRequestHeader, setPlugin } from "./proxy_wasm";

class AddHeader extends Plugin {
  value: string = "Hello from WASM!";
  onConfigure(configuration: string): bool {
    if (configuration.length > 0) this.value = configuration;
    return true;
  }
  onRequestHeaders(contextID: u32, headers: u32, endOfStream: bool): Action {
    addRequestHeader("x-my-header", this.value);
    return Action.Continue;
  }
}

setPlugin(new AddHeader());
