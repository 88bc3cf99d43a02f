import { Client as PortableClient, type ClientOptions } from "./client.js";
export * from "./index.js";
/** A client of one gateway; see `ClientOptions`. */
export declare class Client extends PortableClient {
    constructor(baseUrl: string, options?: ClientOptions);
}
