/** The readiness variable's name: a non-empty C string without '='. */
import { invalidArgValue } from '../errors';
import { validateCString } from '../validators';

export function validateEnvKey(envKey: unknown): asserts envKey is string {
  validateCString(envKey, 'envKey', { allowEmpty: false });
  if (envKey.includes('=')) throw invalidArgValue('envKey', envKey, "must not contain '='");
}
