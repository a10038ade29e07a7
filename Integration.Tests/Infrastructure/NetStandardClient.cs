using System.Reflection;
using System.Runtime.Loader;
using System.Runtime.Versioning;

namespace Retrieval.Integration.Tests.Infrastructure;

/// <summary>
/// The client library's netstandard2.1 build, loaded in a context of its own beside the net10.0 build the tests
/// reference, and called through reflection: the code hosts on other runtimes run (its dependencies, gRPC and
/// Protobuf, are the test host's).
/// </summary>
public sealed class NetStandardClient : AssemblyLoadContext
{
    private readonly Assembly _library;

    public NetStandardClient()
        : base("Retrieval.Client netstandard2.1", isCollectible: true)
    {
        _library = LoadFromAssemblyPath(Programs.NetStandardClient);
        var framework = _library.GetCustomAttribute<TargetFrameworkAttribute>()?.FrameworkName;
        if (framework != ".NETStandard,Version=v2.1")
        {
            throw new InvalidOperationException($"{Programs.NetStandardClient} targets {framework}, not netstandard2.1");
        }
    }

    /// <summary>The library's options object with these settings (property names as in RetrievalClientOptions).</summary>
    public object Options(params (string Name, object? Value)[] settings)
    {
        var options = Activator.CreateInstance(Type("RetrievalClientOptions"))!;
        foreach (var (name, value) in settings)
        {
            options.GetType().GetProperty(name)!.SetValue(options, value);
        }
        return options;
    }

    /// <summary>RetrievalClient.Create(options); the exception it throws, if any, unwrapped.</summary>
    public IDisposable Create(object options)
    {
        try
        {
            return (IDisposable)Type("RetrievalClient").GetMethod("Create", [options.GetType()])!.Invoke(null, [options])!;
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw e.InnerException;
        }
    }

    /// <summary>client.RecommendAsync(user, k) with the other parameters at their defaults: whether it was degraded, and how many movies.</summary>
    public static async Task<(bool Degraded, int Movies)> RecommendAsync(IDisposable client, string user, int k)
    {
        var method = client.GetType().GetMethods().Single(m => m.Name == "RecommendAsync" && m.GetParameters()[0].ParameterType == typeof(string));
        var args = method.GetParameters().Select(p => p.HasDefaultValue ? p.DefaultValue : null).ToArray();
        (args[0], args[1]) = (user, k);
        var call = (Task)method.Invoke(client, args)!;
        await call;
        dynamic answer = call.GetType().GetProperty("Result")!.GetValue(call)!;
        return ((bool)answer.Degraded, (int)answer.Movies.Count);
    }

    private Type Type(string name) => _library.GetType("Retrieval.Client." + name, throwOnError: true)!;

    protected override Assembly? Load(AssemblyName assemblyName) => null; // the rest from the test host
}
