import { type ServiceEnv, type ServiceRegistration, type ServiceSetup } from '@polymesh/runtime';
import { Failure } from '../../../../../gen/ts/polymesh/conformance/v1/conformance';
export declare const LANGUAGE = "typescript";
/** Throws as `failure` asks; returns when it asks for nothing. */
export declare function failAsAsked(failure: Failure, message: string, serviceName: string): void;
export declare function conformanceService(env: ServiceEnv<unknown>): ServiceRegistration;
export declare function setup(env: ServiceEnv<unknown>): Promise<ServiceSetup>;
