using System.Globalization;
using System.Text;

namespace Retrieval.Core.Artifact;

/// <summary>
/// A models folder: one sub-folder per version and a <c>current</c> file naming the version to serve.
/// Publishing is atomic: the version is written into a hidden staging folder, renamed into place, and only
/// then is <c>current</c> replaced by renaming a new pointer file over it. A reader therefore sees either
/// the old version or the complete new one; a publisher killed midway leaves only a staging folder, which
/// readers ignore and the next publish removes.
/// </summary>
public sealed class ModelRepository(string root)
{
    public const string CurrentPointer = "current";
    private const string StagingPrefix = ".staging-";

    public string Root { get; } = Path.GetFullPath(root);

    /// <summary>The version <c>current</c> names, or null when nothing is published yet.</summary>
    public string? CurrentVersion()
    {
        var pointer = Path.Combine(Root, CurrentPointer);
        if (!File.Exists(pointer))
        {
            return null;
        }
        var version = File.ReadAllText(pointer, Encoding.UTF8).Trim();
        return version.Length == 0 ? null : version;
    }

    public string VersionDirectory(string version)
    {
        if (version.Length == 0 || version.StartsWith('.') || version.IndexOfAny(['/', '\\']) >= 0 || version == CurrentPointer)
        {
            throw new ArgumentException($"'{version}' is not a model version name");
        }
        return Path.Combine(Root, version);
    }

    /// <summary>Published versions, oldest first (version names sort by time).</summary>
    public IReadOnlyList<string> Versions() =>
        !Directory.Exists(Root) ? [] :
        [.. Directory.EnumerateDirectories(Root).Select(Path.GetFileName).OfType<string>()
            .Where(n => !n.StartsWith('.') && File.Exists(Path.Combine(Root, n, ModelManifest.FileName)))
            .Order(StringComparer.Ordinal)];

    /// <summary>A new, unique version name that sorts by publication time.</summary>
    public static string NewVersionName(DateTimeOffset now) =>
        now.UtcDateTime.ToString("yyyyMMdd'-'HHmmss'-'fff", CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..6];

    /// <summary>
    /// Publishes a version: <paramref name="write"/> fills a staging folder (given the version name), which is
    /// verified by loading it, renamed into place, and made current. Returns the version name.
    /// </summary>
    public string Publish(Action<string, string> write, DateTimeOffset? now = null, Action<string>? log = null)
    {
        Directory.CreateDirectory(Root);
        RemoveStaleStaging(log);
        var version = NewVersionName(now ?? DateTimeOffset.UtcNow);
        var staging = Path.Combine(Root, StagingPrefix + version);
        try
        {
            write(staging, version);
            using (ModelArtifact.Load(staging))
            {
                // Loading verifies checksums and shapes: nothing unreadable gets published.
            }
            Directory.Move(staging, VersionDirectory(version));
        }
        catch
        {
            TryDelete(staging);
            throw;
        }
        SetCurrent(version);
        log?.Invoke($"Published model version {version} to {Root}");
        return version;
    }

    /// <summary>Publishes a copy of an already written version folder (for example one from <c>train --out</c>).</summary>
    public string PublishCopy(string sourceDirectory, Action<string>? log = null) => Publish((staging, version) =>
    {
        CopyDirectory(sourceDirectory, staging);
        var manifestPath = Path.Combine(staging, ModelManifest.FileName);
        var manifest = ModelManifest.Read(manifestPath);
        manifest.ModelVersion = version;
        manifest.Write(manifestPath);
    }, log: log);

    /// <summary>Points <c>current</c> at a published version (also used to roll back).</summary>
    public void SetCurrent(string version)
    {
        if (!Directory.Exists(VersionDirectory(version)))
        {
            throw new DirectoryNotFoundException($"no version {version} in {Root}");
        }
        var temp = Path.Combine(Root, $".{CurrentPointer}-{Guid.NewGuid():N}");
        using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
        {
            stream.Write(Encoding.UTF8.GetBytes(version + "\n"));
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, Path.Combine(Root, CurrentPointer), overwrite: true);
    }

    /// <summary>Deletes versions beyond the newest <paramref name="keep"/>, never the current one.</summary>
    public void Prune(int keep, Action<string>? log = null)
    {
        var current = CurrentVersion();
        var versions = Versions();
        foreach (var old in versions.Take(Math.Max(0, versions.Count - keep)))
        {
            if (old != current)
            {
                TryDelete(VersionDirectory(old));
                log?.Invoke($"Removed old model version {old}");
            }
        }
    }

    private void RemoveStaleStaging(Action<string>? log)
    {
        foreach (var dir in Directory.EnumerateDirectories(Root, StagingPrefix + "*"))
        {
            // A staging folder older than a minute belongs to a publisher that died.
            if (Directory.GetLastWriteTimeUtc(dir) < DateTime.UtcNow.AddMinutes(-1))
            {
                TryDelete(dir);
                log?.Invoke($"Removed abandoned staging folder {dir}");
            }
        }
    }

    private static void CopyDirectory(string source, string target)
    {
        if (!File.Exists(Path.Combine(source, ModelManifest.FileName)))
        {
            throw new DirectoryNotFoundException($"{source} is not a model folder (no {ModelManifest.FileName})");
        }
        foreach (var file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            var to = Path.Combine(target, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
            // Best effort: a leftover staging folder is ignored by readers and retried on the next publish.
        }
    }
}
