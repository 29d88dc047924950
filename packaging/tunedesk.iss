; Inno Setup 6 script of the Windows installer. packaging\build_windows.ps1 compiles it after the
; PyInstaller build:
;   ISCC.exe /DAppVersion=0.1.0 /DSourceDir=C:\...\dist\tunedesk packaging\tunedesk.iss
; It installs the one-folder bundle per user (no administrator rights needed; "all users" can be
; chosen), adds a Start menu entry (and optionally a desktop icon) for TuneDesk.exe, and offers to
; start the app. Uninstalling removes the program files; the user's models and runs
; (%LOCALAPPDATA%\TuneDesk, or TUNEDESK_HOME) are kept.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef SourceDir
  #define SourceDir "..\dist\tunedesk"
#endif
#ifndef OutputDir
  #define OutputDir "..\dist"
#endif
#ifndef OutputName
  #define OutputName "TuneDesk-" + AppVersion + "-windows-x64-setup"
#endif

[Setup]
AppId={{6C1F1E52-3B0A-4F5E-9C61-7B3E5D2A9F10}
AppName=TuneDesk
AppVersion={#AppVersion}
AppVerName=TuneDesk {#AppVersion}
AppPublisher=TuneDesk
DefaultDirName={autopf}\TuneDesk
DefaultGroupName=TuneDesk
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename={#OutputName}
; The bundle is about 1 GB, mostly DLLs: lzma2 at its normal level is a fair size/time trade-off.
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
UninstallDisplayIcon={app}\TuneDesk.exe
UninstallDisplayName=TuneDesk {#AppVersion}

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; an upgrade replaces the whole bundle: no stale module of an older version is left beside the new one
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{autoprograms}\TuneDesk"; Filename: "{app}\TuneDesk.exe"
Name: "{autodesktop}\TuneDesk"; Filename: "{app}\TuneDesk.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\TuneDesk.exe"; Description: "{cm:LaunchProgram,TuneDesk}"; Flags: nowait postinstall skipifsilent
