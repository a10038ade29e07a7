namespace Retrieval.ServiceDefaults;

/// <summary>
/// Calls in flight held to a limit: <see cref="TryEnter"/> before a call (false when the limit is reached, and then
/// nothing is counted), <see cref="Exit"/> once it is over. Lock-free; for <see cref="CallAdmission"/>'s incoming calls
/// and the query service's outgoing candidate calls alike.
/// </summary>
public sealed class CallsInFlight(int max)
{
    private int _count;

    public bool TryEnter()
    {
        if (Interlocked.Increment(ref _count) <= max)
        {
            return true;
        }
        Exit();
        return false;
    }

    public void Exit() => Interlocked.Decrement(ref _count);
}
