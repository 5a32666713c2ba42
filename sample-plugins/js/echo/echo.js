// Returns its input parameters as output parameters: the smallest useful plug-in (the
// JavaScript twin of sample-plugins/echo).
import { Output, plugin } from 'sluice-sdk';

export const handler = plugin((ctx) => new Output(ctx.inputParameters));
